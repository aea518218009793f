#!/usr/bin/env python3
"""`make bench`: popd side by side with Dovecot and popa3d on the same
mailbox, one session at a time, alternating servers run by run so that
machine noise hits all alike. As root: it makes real accounts (bench-*),
spools in /var/mail and PAM files, as the servers need them.

  popd     started as root, privilege separation on (as deployed), under
           systemd-socket-activate; implicit TLS on a second port
  dovecot  Debian's dovecot-pop3d, its own instance and config on loopback,
           mbox spool, index kept warm by a login before each timed run
  popa3d   Debian's binary (apt-get download + dpkg -x; never installed:
           it conflicts with Dovecot's package), under systemd-socket-activate

A peer that cannot be set up is reported as missing. Results, as Markdown,
go to bench/results/SIZE.md.

Usage: bench/run.py [--size small|medium|large] [--runs N] [--only SCENARIO]
"""
import argparse
import os
import pwd
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(1, os.path.join(TOP, "tests", "system"))
import client  # noqa: E402
from report import report, summary  # noqa: E402
from support import free_port, sh, wait_listening  # noqa: E402
from support import wait_until_listening as wait_listening_bound  # noqa: E402  (binds, never connects)

WORK = "/var/tmp/popd-bench"
PASSWORD = "bench-Pw-1"
MAILDIR = False  # --format maildir: each server serves ~/Maildir, made of the same messages


def account(name, system=False):
    """A real account with a password: every server goes through pam_unix.
    A mail user is an ordinary account (popd refuses system accounts, uids
    below UID_MIN); a server's own is a system account."""
    try:
        if pwd.getpwnam(name).pw_uid < 1000 and not system:
            sh("userdel", name)
    except KeyError:
        pass
    try:
        pwd.getpwnam(name)
    except KeyError:
        sh("useradd", *(["--system"] if system else []), "--create-home", "--home-dir", f"{WORK}/home/{name}",
           "--shell", "/bin/sh", name)
    sh("chpasswd", input=f"{name}:{PASSWORD}\n")
    return pwd.getpwnam(name)


def certificate():
    cert, key = f"{WORK}/cert.pem", f"{WORK}/key.pem"
    if not os.path.exists(cert):
        sh("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-days", "30",
           "-keyout", key, "-out", cert)
    return cert, key


class Server:
    """One server under test: its account, its spool, how to start it."""
    tls_port = None

    def __init__(self, name):
        self.name = name
        self.user = account(f"bench-{name}")
        self.spool = f"{self.user.pw_dir}/Maildir" if MAILDIR else f"/var/mail/{self.user.pw_name}"
        self.processes = []
        self.rusage = f"{WORK}/{name}.rusage"
        self.state_dirs = [self.user.pw_dir]  # where the server keeps what it knows of the mailbox

    def evict(self):
        """The spool and the server's files for this user out of the page
        cache, as on a host whose memory went to other users since the last
        poll (posix_fadvise: a dirty page is written first, else it stays)."""
        paths = [self.spool] + [os.path.join(root, name) for top in self.state_dirs
                                for root, _, names in os.walk(top) for name in names]
        for path in paths:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
            except OSError:
                continue
            try:
                os.fdatasync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)

    def restore(self, pristine):
        """The pristine mailbox, in place (the inode stays, as after delivery);
        a Maildir copied anew, as the user's."""
        if MAILDIR:
            shutil.rmtree(self.spool, ignore_errors=True)
            sh("cp", "-a", maildir_of(pristine), self.spool)
            sh("chown", "-R", f"{self.user.pw_uid}:{self.user.pw_gid}", self.spool)
            os.sync()
            return
        with open(pristine, "rb") as src, open(self.spool, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 22)
            dst.flush()
            os.fsync(dst.fileno())  # on disk, as delivered mail long is: no fsync in a run pays for it
        os.chown(self.spool, self.user.pw_uid, 8)  # user:mail, as MDAs make spools
        os.chmod(self.spool, 0o660)

    def inetd(self, port, command):
        """Under systemd-socket-activate, each connection's process timed by
        GNU time (CPU, and the peak RSS of the largest of its processes)."""
        timed = ["/usr/bin/time", "-a", "-o", self.rusage, "-f", "%U %S %M"] + command
        self.processes.append(subprocess.Popen(["systemd-socket-activate", "--inetd", "-a", "-l",
                                                f"127.0.0.1:{port}"] + timed,
                                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_listening_bound(port)

    def usage(self, sessions=1):
        """(CPU seconds, peak RSS KiB) of each session since the last call,
        once `sessions` have ended: a server may end the connection before
        its process is done (popd writes its index and lets the locks go
        after the client has the end of the connection)."""
        deadline = time.monotonic() + 30
        while True:
            lines = []
            if os.path.exists(self.rusage):
                lines = [l.split() for l in open(self.rusage).read().splitlines() if l and l[0].isdigit()]
            if len(lines) >= sessions or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        if os.path.exists(self.rusage):
            os.unlink(self.rusage)
        return [(float(u) + float(s), int(m)) for u, s, m in lines]

    def stop(self):
        for p in self.processes:
            p.terminate()
            p.wait()

    # Process names (comm) whose peak RSS is sampled, by role.
    process_names = ()

    def sampler(self):
        """A process that samples the peak RSS of the server's processes
        until it reads a line on stdin, then prints them: its own process,
        so that it takes neither the client's GIL nor much CPU."""
        return subprocess.Popen([sys.executable, "-c", SAMPLER, ",".join(self.process_names),
                                 str(self.user.pw_uid)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


# Peak RSS (VmHWM, KiB) by role: root, unprivileged helper, or the user's
# session. Reads a process's name once; only matching ones are sampled.
SAMPLER = r"""
import os, select, sys
names, user = set(sys.argv[1].split(",")), int(sys.argv[2])
known, peaks = {}, {}
first = True
while first or not select.select([sys.stdin], [], [], 0.01)[0]:
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        if pid not in known:
            try:
                known[pid] = open(f"/proc/{pid}/comm").read().strip() in names
            except OSError:
                continue
        if not known[pid]:
            continue
        try:
            fields = dict(l.split(":", 1) for l in open(f"/proc/{pid}/status").read().splitlines())
        except (OSError, ValueError):
            continue
        if "VmHWM" not in fields:  # a zombie
            continue
        uid = int(fields["Uid"].split()[0])
        role = "root" if uid == 0 else "session" if uid == user else "helper"
        peaks[role] = max(peaks.get(role, 0), int(fields["VmHWM"].split()[0]))
    if first:
        print("ready", flush=True)  # the names of what runs now are known
        first = False
print(" ".join(f"{k}={v}" for k, v in peaks.items()), flush=True)
"""


class Popd(Server):
    process_names = ("popd",)

    def __init__(self):
        super().__init__("popd")
        if not os.path.exists("/etc/pam.d/popd"):
            shutil.copy(f"{TOP}/pam.d/popd", "/etc/pam.d/popd")
        try:
            pwd.getpwnam("popd")  # the pre-login process's, as the package makes it (TLS needs one)
        except KeyError:
            sh("useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent", "--shell",
               "/usr/sbin/nologin", "popd")
        cert, key = certificate()
        binary = f"{TOP}/popd"
        self.port, self.tls_port = free_port(), free_port()
        self.inetd(self.port, [binary] + (["--mailbox", "%h/Maildir/"] if MAILDIR else []))
        self.inetd(self.tls_port, [binary, "--tls-cert", cert, "--tls-key", key, "--tls-implicit"] +
                   (["--mailbox", "%h/Maildir/"] if MAILDIR else []))


class Popa3d(Server):
    process_names = ("popa3d",)

    def __init__(self):
        if MAILDIR:
            raise RuntimeError("popa3d serves mbox spools only")
        root = f"{WORK}/popa3d-root"
        if not os.path.exists(f"{root}/usr/sbin/popa3d"):
            os.makedirs(WORK, exist_ok=True)
            sh("apt-get", "download", "popa3d", cwd=WORK)
            deb = next(f for f in os.listdir(WORK) if f.startswith("popa3d_") and f.endswith(".deb"))
            sh("dpkg", "-x", f"{WORK}/{deb}", root)
        super().__init__("popa3d")
        account("popa3d", system=True)  # its unprivileged account, as its package would make
        os.makedirs("/var/lib/popa3d", mode=0o755, exist_ok=True)
        if not os.path.exists("/etc/pam.d/popa3d"):
            shutil.copy(f"{root}/etc/pam.d/popa3d", "/etc/pam.d/popa3d")
        self.port = free_port()
        self.inetd(self.port, [f"{root}/usr/sbin/popa3d"])


class Dovecot(Server):
    process_names = ("pop3", "pop3-login", "auth", "auth-worker")

    def __init__(self):
        if not shutil.which("dovecot"):
            raise RuntimeError("dovecot is not installed (apt-get install dovecot-pop3d)")
        super().__init__("dovecot")
        cert, key = certificate()
        base = f"{WORK}/dovecot"
        shutil.rmtree(base, ignore_errors=True)
        os.makedirs(f"{base}/run")
        self.port, self.tls_port = free_port(), free_port()
        config = f"{base}/dovecot.conf"
        with open(config, "w") as f:
            f.write(f"""protocols = pop3
listen = 127.0.0.1
base_dir = {base}/run
state_dir = {base}/state
log_path = {base}/dovecot.log
ssl = yes
ssl_cert = <{cert}
ssl_key = <{key}
disable_plaintext_auth = no
auth_mechanisms = plain
passdb {{
  driver = pam
}}
userdb {{
  driver = passwd
}}
mail_location = {"maildir:~/Maildir" if MAILDIR else "mbox:" + base + "/mail/%u:INBOX=/var/mail/%u"}:INDEX={base}/index/%u
mail_privileged_group = mail
pop3_uidl_format = %08Xu%08Xv
service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {self.port}
  }}
  inet_listener pop3s {{
    address = 127.0.0.1
    port = {self.tls_port}
    ssl = yes
  }}
}}
""")
        self.state_dirs += [f"{base}/mail/{self.user.pw_name}", f"{base}/index/{self.user.pw_name}"]
        for folder in ("mail", "index"):  # made by each user's pop3 process
            os.makedirs(f"{base}/{folder}")
            os.chmod(f"{base}/{folder}", 0o1777)
        os.chmod(base, 0o755)
        self.processes.append(subprocess.Popen(["dovecot", "-F", "-c", config]))
        wait_listening(self.port)
        self.cpu_mark = self.cpu_seconds()

    def cpu_seconds(self):
        """CPU of every Dovecot process, and of those it has reaped."""
        total = 0.0
        tick = os.sysconf("SC_CLK_TCK")
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                stat = open(f"/proc/{pid}/stat").read()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()
            if "dovecot" in stat[:stat.rindex(")")] or stat.split("(")[1].startswith(("pop3", "auth", "anvil", "log",
                                                                                       "config", "stats")):
                total += sum(int(x) for x in fields[11:15]) / tick
        return total

    def usage(self, sessions=1):
        now = self.cpu_seconds()
        used, self.cpu_mark = now - self.cpu_mark, now
        return [(used, None)]

# --- the mailbox and what the client must receive ---------------------------

class Mailbox:
    def __init__(self, path):
        self.path = path
        data = open(path, "rb").read()
        starts = [0] + [i + 2 for i in iter_find(data, b"\n\nFrom ")]
        self.records = [data[a:b] for a, b in zip(starts, starts[1:] + [len(data)])]
        self.count = len(self.records)
        self.bodies = [client_form(r) for r in self.records]
        self.size = len(data)

    def without(self, deleted):
        return b"".join(r for i, r in enumerate(self.records, 1) if i not in deleted)

    def moved(self, deleted):
        """The bytes a deletion in place moves: the kept mail after the first deleted message."""
        first = min(deleted)
        return sum(len(r) for i, r in enumerate(self.records, 1) if i > first and i not in deleted)


def iter_find(data, needle):
    at = data.find(needle)
    while at >= 0:
        yield at
        at = data.find(needle, at + 1)


def client_form(record):
    """What RETR sends of a record, stuffed, without the terminating dot."""
    content = record[record.index(b"\n") + 1:]
    if content.endswith(b"\n\n"):
        content = content[:-1]  # the empty line before the next "From " separates
    lines = content.split(b"\n")[:-1]
    return b"".join((b"." + l if l.startswith(b".") else l) + b"\r\n" for l in lines)


# --- scenarios ----------------------------------------------------------------

class Scenario:
    """One row. `floor`, `limit`: the floor a target measures popd's row
    against, and the target's ratio; the floor is timed in every round,
    next to popd's run, so that the machine's slow and quick phases (on
    this VM they move a row by up to 2x within minutes) hit both alike.
    `rounds`: more runs than --runs, for rows that cost little."""

    def __init__(self, name, commands, deleted=lambda n: (), tls=False, replace=False, check=None,
                 floor=None, limit=None, rounds=1, cold=False):
        self.name, self.commands, self.deleted, self.tls, self.replace, self.check, self.cold = \
            name, commands, deleted, tls, replace, check, cold
        self.floor, self.limit, self.rounds = floor, limit, rounds


LOGIN_STAT = lambda n: "STAT\r\n"  # noqa: E731
LOGIN_STAT_FLOOR = "popd's login + STAT, run next to it"
COLD_LOGIN_STAT = "login + STAT, cold"
COLD_LOGIN_STAT_FLOOR = "popd's login + STAT, cold, run next to it"
PLAIN_CEILING = "client ceiling, plain (sendfile of the RETR bytes)"
TLS_CEILING = "client ceiling, TLS"
COPY_FLOOR = "cp + fsync"
COPY_TENTH_FLOOR = "cp + fsync of what stays after DELE of the first 10 %"
REMOVE_FLOOR = "rm of every message file + sync"


def all_of(verb, suffix=""):
    return lambda n: "".join(f"{verb} {i}{suffix}\r\n" for i in range(1, n + 1))


def scenarios():
    retr, top = all_of("RETR"), all_of("TOP", " 0")
    if MAILDIR:
        return [
            Scenario("login + STAT", LOGIN_STAT, check="stat", rounds=3),
            Scenario("UIDL", lambda n: "UIDL\r\n", check="uidl", floor=LOGIN_STAT_FLOOR, limit=1.1, rounds=3),
            Scenario("RETR every message, pipelined", retr, check="retr", floor=PLAIN_CEILING, limit=1.5),
            Scenario("TOP n 0 of every message", top, check="top"),
            Scenario("DELE 1 + QUIT", lambda n: "DELE 1\r\n", deleted=lambda n: {1}),
            Scenario("DELE all + QUIT", all_of("DELE"), deleted=lambda n: set(range(1, n + 1)), floor=REMOVE_FLOOR,
                     limit=1.2),
        ]
    return [
        Scenario("login + STAT", LOGIN_STAT, check="stat", rounds=3),
        Scenario(COLD_LOGIN_STAT, LOGIN_STAT, check="stat", rounds=3, cold=True),
        Scenario("first login after new mail replaced the file", lambda n: "STAT\r\n", replace=True, check="stat"),
        Scenario("UIDL", lambda n: "UIDL\r\n", check="uidl", floor=LOGIN_STAT_FLOOR, limit=1.1, rounds=3),
        Scenario("UIDL, cold", lambda n: "UIDL\r\n", check="uidl", floor=COLD_LOGIN_STAT_FLOOR, limit=1.1,
                 rounds=3, cold=True),
        Scenario("RETR every message, pipelined", retr, check="retr", floor=PLAIN_CEILING, limit=1.5),
        Scenario("TOP n 0 of every message", top, check="top"),
        Scenario("RETR every message, TLS", retr, tls=True, check="retr", floor=TLS_CEILING, limit=1.5),
        Scenario("TOP n 0 of every message, TLS", top, tls=True, check="top"),
        Scenario("DELE 1 + QUIT", lambda n: "DELE 1\r\n", deleted=lambda n: {1}, floor=COPY_FLOOR, limit=2),
        Scenario("DELE first 10 % + QUIT", lambda n: all_of("DELE")(max(1, n // 10)),
                 deleted=lambda n: set(range(1, max(1, n // 10) + 1)), floor=COPY_TENTH_FLOOR, limit=1.2),
        Scenario("DELE last + QUIT", lambda n: f"DELE {n}\r\n", deleted=lambda n: {n}),
        Scenario("DELE all + QUIT", all_of("DELE"), deleted=lambda n: set(range(1, n + 1))),
    ]


def login(server):
    return f"USER {server.user.pw_name}\r\nPASS {PASSWORD}\r\n"


def status_lines(data):
    return data.split(b"\r\n", 3)


def verify(scenario, server, box, data, deleted):
    """Checks what came back (and the spool after a deleting QUIT)."""
    lines = data.split(b"\r\n", 3)
    if not (lines[0].startswith(b"+OK") and lines[1].startswith(b"+OK") and lines[2].startswith(b"+OK")):
        raise AssertionError(f"{server.name}: login failed: {data[:300]!r}")
    after_login = len(lines[0]) + len(lines[1]) + len(lines[2]) + 6
    if scenario.check == "stat":
        count = box.count + (1 if scenario.replace else 0)
        if not lines[3].startswith(f"+OK {count} ".encode()):
            raise AssertionError(f"{server.name}: STAT {lines[3][:80]!r}, expected {count} messages")
    elif scenario.check in ("retr", "top", "uidl"):
        count = 1 if scenario.check == "uidl" else box.count
        bodies = list(client.multiline_bodies(data, after_login, count))
        if scenario.check == "uidl":
            if len(bodies[0][1].split(b"\r\n")) - 1 != box.count:
                raise AssertionError(f"{server.name}: UIDL listing has the wrong length")
            return
        if len(bodies) != box.count:
            raise AssertionError(f"{server.name}: {len(bodies)} replies for {box.count} messages")
        for i, (status, body) in enumerate(bodies):
            expected = box.bodies[i]
            if scenario.check == "top":
                expected = expected[:expected.index(b"\r\n\r\n") + 4]
            if not status.startswith(b"+OK") or body != expected:
                raise AssertionError(f"{server.name}: message {i + 1} differs: {status!r} {body[:200]!r}")
    if deleted:
        if not data.rstrip(b"\r\n").split(b"\r\n")[-1].startswith(b"+OK"):
            raise AssertionError(f"{server.name}: QUIT failed: {data[-200:]!r}")
        if MAILDIR:
            left = sum(len(os.listdir(f"{server.spool}/{folder}")) for folder in ("new", "cur"))
            if left != box.count - len(deleted):
                raise AssertionError(f"{server.name}: {left} messages left, expected {box.count - len(deleted)}")
            return
        left = open(server.spool, "rb").read()
        if server.name == "popd" and left != box.without(deleted):
            raise AssertionError("popd: the spool after QUIT is not the original less the deleted messages")
        separators = left.count(b"\n\nFrom ") + left.startswith(b"From ")
        if separators != box.count - len(deleted) + (1 if server.name == "dovecot" and left.count(
                b"DON'T DELETE THIS MESSAGE") else 0):
            raise AssertionError(f"{server.name}: {separators} messages left, expected {box.count - len(deleted)}")


def replace_with_new_mail(server, box):
    """New mail, written as some MDAs and mail tools do: a new file renamed
    over the spool (a new inode; Dovecot's index no longer matches)."""
    temporary = server.spool + ".new"
    with open(temporary, "wb") as f:
        with open(box.path, "rb") as src:
            shutil.copyfileobj(src, f, 1 << 22)
        f.write(b"From new@example.org Tue Jan 30 10:00:00 2024\nSubject: new\n\nnew mail\n\n")
        f.flush()
        os.fsync(f.fileno())
    os.chown(temporary, server.user.pw_uid, 8)
    os.chmod(temporary, 0o660)
    os.rename(temporary, server.spool)


def settled(path, seconds=2.5):
    """Waits until `path` last changed `seconds` ago: at most logins no mail
    is being delivered that instant (popd verifies an index saved within
    2 s of a change in full, as git does its racy index entries)."""
    age = time.time() - os.stat(path).st_ctime
    if age < seconds:
        time.sleep(seconds - age)


def resident_bytes(path):
    out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", path], capture_output=True,
                         text=True).stdout.strip()
    return int(out or 0)


def device_sectors_written(path):
    """Sectors written to the block device holding `path` (its partition's
    count), from /sys: what reached the disk, whoever wrote it."""
    st = os.stat(path)
    with open(f"/sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}/stat") as f:
        return int(f.read().split()[6])


def timed_run(scenario, server, box):
    """(seconds, CPU seconds, peak RSS by role, {"read": spool bytes a cold
    login brought in, "written": bytes that reached the disk})"""
    deleted = scenario.deleted(box.count)
    if deleted or scenario.replace:
        server.restore(box.path)
    port = server.tls_port if scenario.tls else server.port
    if scenario.cold or deleted:  # a deletion, too, comes long after the delivery
        settled(server.spool)
    client.session(server.port, (login(server) + "STAT\r\nQUIT\r\n").encode())  # warm cache and index
    # The whole spool in the page cache: a login with a valid index reads
    # little of it, and this machine's kernel pages out what idles (DAMON).
    if not MAILDIR:
        read_file(server.spool)
    if scenario.replace:
        replace_with_new_mail(server, box)
    server.usage()
    io = {}
    if scenario.cold:
        time.sleep(0.05)  # the warm session's process has written its index
        server.evict()
        io["read"] = -resident_bytes(server.spool)
    if deleted:
        os.sync()
        io["written"] = -device_sectors_written(server.spool)
    sampler = server.sampler()
    sampler.stdout.readline()
    commands = (login(server) + scenario.commands(box.count) + "QUIT\r\n").encode()
    capacity = int(box.size * 1.1) + box.count * 64 if scenario.check in ("retr", "top", "uidl") else 1 << 20
    elapsed, data = client.session(port, commands, tls=scenario.tls, capacity=capacity)
    time.sleep(0.05)  # let the server's processes end and be accounted
    cpu = sum(u[0] for u in server.usage())
    peaks = {k: int(v) for k, v in (p.split("=") for p in sampler.communicate("stop\n")[0].split())}
    if "read" in io:
        io["read"] += resident_bytes(server.spool)
    if "written" in io:
        os.sync()
        io["written"] = (io["written"] + device_sectors_written(server.spool)) * 512
    verify(scenario, server, box, data, deleted)
    if scenario.replace:
        server.restore(box.path)
    return elapsed, cpu, peaks, io


# --- floors -------------------------------------------------------------------

def time_it(function, runs):
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return times


def read_file(path):
    with open(path, "rb") as f:
        while f.read(1 << 22):
            pass


def copy_and_fsync(path, start=0):
    copy = "/var/mail/.bench-copy"  # the spools' file system
    with open(path, "rb") as src, open(copy, "wb") as dst:
        src.seek(start)
        shutil.copyfileobj(src, dst, 1 << 22)
        dst.flush()
        os.fsync(dst.fileno())
    os.unlink(copy)


def maildir_of(pristine):
    """The Maildir made of the messages of the mbox at `pristine`, once:
    one file per message, as Postfix's local delivers (no ,S= or ,W=)."""
    path = pristine[:-len(".mbox")] + ".maildir"
    if not os.path.exists(f"{path}/.done"):
        shutil.rmtree(path, ignore_errors=True)
        for folder in ("cur", "new", "tmp"):
            os.makedirs(f"{path}/{folder}")
        for i, record in enumerate(Mailbox(pristine).records):
            content = record[record.index(b"\n") + 1:]
            if content.endswith(b"\n\n"):
                content = content[:-1]  # the empty line before the next "From " separates
            with open(f"{path}/cur/{1700000000 + i}.M{i}P1.bench:2,S", "wb") as f:
                f.write(content)
        open(f"{path}/.done", "w").close()
    return path


def remove_and_sync(pristine):
    """rm of a copy of the Maildir's files, then sync: the floor of DELE all."""
    copy = "/var/mail/.bench-maildir"  # the Maildirs' file system
    shutil.rmtree(copy, ignore_errors=True)
    sh("cp", "-a", maildir_of(pristine), copy)
    os.sync()
    start = time.perf_counter()
    for name in os.listdir(f"{copy}/cur"):
        os.unlink(f"{copy}/cur/{name}")
    os.sync()
    elapsed = time.perf_counter() - start
    shutil.rmtree(copy, ignore_errors=True)
    return elapsed


def pam_alone():
    """What PAM costs on this machine: the same service and account,
    through pamtester (its peak RSS is printed: the password hash's)."""
    user, usage = "bench-popd", f"{WORK}/pamtester.rusage"
    subprocess.run(["/usr/bin/time", "-o", usage, "-f", "%M", "pamtester", "popd", user, "authenticate", "acct_mgmt"],
                   input=PASSWORD + "\n", capture_output=True, text=True, check=True)
    PAM_PEAK_KIB.append(int(open(usage).read().split()[-1]))


PAM_PEAK_KIB = []


def ceiling(path, length, tls, runs):
    """The client's own ceiling: a sender that writes `length` bytes of the
    file as fast as the kernel (sendfile) or OpenSSL can."""
    port = free_port()
    cert, key = certificate()
    read_file(path)  # in the page cache, as the servers' spools are
    sender = subprocess.Popen([sys.executable, "-c", SENDER, str(port), path, str(length), cert, key,
                               "tls" if tls else "plain"])
    try:
        wait_listening_bound(port)
        return [client.session(port, b"", tls=tls, expect=length)[0] for _ in range(runs)]
    finally:
        sender.kill()
        sender.wait()


SENDER = r"""
import os, socket, ssl, sys
port, path, length, cert, key, mode = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6]
listener = socket.create_server(("127.0.0.1", port))
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
fd = os.open(path, os.O_RDONLY)
while True:
    conn, _ = listener.accept()
    if mode == "tls":
        # The same 4 MiB again and again, read once: the sender does only
        # what TLS must, so that it outruns the client it measures.
        conn = context.wrap_socket(conn, server_side=True)
        chunk = memoryview(os.pread(fd, 4 << 20, 0))
        sent = 0
        while sent < length:
            n = min(len(chunk), length - sent)
            conn.sendall(chunk[:n])
            sent += n
    else:
        sent = 0
        while sent < length:
            sent += os.sendfile(conn.fileno(), fd, sent % os.fstat(fd).st_size, length - sent)
    conn.close()
"""


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="medium", choices=("small", "medium", "large"))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--only", default="")
    parser.add_argument("--format", default="mbox", choices=("mbox", "maildir"))
    args = parser.parse_args()
    global MAILDIR
    MAILDIR = args.format == "maildir"
    if os.geteuid() != 0:
        sys.exit("bench/run.py: run as root (it starts the servers as root, as they are deployed)")
    os.makedirs(WORK, exist_ok=True)
    pristine = f"{WORK}/{args.size}.mbox"
    if not os.path.exists(pristine):
        print(f"generating the {args.size} mailbox ...", flush=True)
        sh(sys.executable, f"{HERE}/mkmbox.py", args.size, pristine)
    box = Mailbox(pristine)
    print(f"mailbox: {box.count:,} messages, {box.size / 1e6:,.0f} MB", flush=True)

    servers, missing = [], {}
    for kind in (Popd, Dovecot, Popa3d):
        try:
            servers.append(kind())
        except Exception as e:  # reported, never silently skipped
            missing[kind.__name__.lower()] = str(e)
            print(f"{kind.__name__.lower()}: MISSING: {e}", flush=True)
    for server in servers:
        server.restore(pristine)

    tenth = sum(len(r) for r in box.records[:max(1, box.count // 10)])
    retr_bytes = sum(len(b) + 5 + 20 for b in box.bodies)
    popd = next((s for s in servers if s.name == "popd"), None)
    paired_floors = {
        LOGIN_STAT_FLOOR: lambda: timed_run(Scenario("", LOGIN_STAT, check="stat"), popd, box)[0],
        COLD_LOGIN_STAT_FLOOR: lambda: timed_run(Scenario("", LOGIN_STAT, check="stat", cold=True), popd, box)[0],
        PLAIN_CEILING: lambda: ceiling(pristine, retr_bytes, False, 1)[0],
        TLS_CEILING: lambda: ceiling(pristine, retr_bytes, True, 1)[0],
        COPY_FLOOR: lambda: time_it(lambda: copy_and_fsync(pristine), 1)[0],
        COPY_TENTH_FLOOR: lambda: time_it(lambda: copy_and_fsync(pristine, tenth), 1)[0],
        REMOVE_FLOOR: lambda: remove_and_sync(pristine),
    }

    results = {}  # scenario -> server -> [(seconds, cpu, {role: peak RSS KiB})]
    paired = {}  # scenario -> [(popd's seconds, its floor's seconds in the same round)]
    try:
        for scenario in scenarios():
            if args.only and args.only not in scenario.name:
                continue
            rows = results.setdefault(scenario.name, {})
            for run in range(args.runs * scenario.rounds):
                for server in servers:  # A B C A B C ...
                    if scenario.tls and server.tls_port is None:
                        rows[server.name] = None
                        continue
                    rows.setdefault(server.name, []).append(timed_run(scenario, server, box))
                if scenario.floor and popd:
                    floor = paired_floors[scenario.floor]()
                    paired.setdefault(scenario.name, []).append((rows["popd"][-1][0], floor))
            line = "  ".join(f"{name} {summary([r[0] for r in runs]) if runs else 'n/a'}" for name, runs in rows.items())
            print(f"{scenario.name}: {line} ms", flush=True)
    finally:
        for server in servers:
            server.stop()

    floors = {
        "read the file (cat)": time_it(lambda: read_file(pristine), args.runs),
        "cp + fsync": time_it(lambda: copy_and_fsync(pristine), args.runs),
        "cp + fsync of what stays after DELE of the first 10 %": time_it(lambda: copy_and_fsync(pristine, tenth),
                                                                          args.runs),
        "PAM alone (pamtester popd USER authenticate acct_mgmt)": time_it(pam_alone, args.runs),
    }
    if MAILDIR:
        floors = {REMOVE_FLOOR: [remove_and_sync(pristine) for _ in range(args.runs)],
                  "PAM alone (pamtester popd USER authenticate acct_mgmt)": floors[
                      "PAM alone (pamtester popd USER authenticate acct_mgmt)"]}
    floors["client ceiling, plain (sendfile of the RETR bytes)"] = ceiling(pristine, retr_bytes, False, args.runs)
    floors["client ceiling, TLS"] = ceiling(pristine, retr_bytes, True, args.runs)
    report(args, box, servers, missing, results, floors, paired, scenarios(), PAM_PEAK_KIB)


if __name__ == "__main__":
    main()
