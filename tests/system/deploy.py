#!/usr/bin/env python3
"""popd under the programs it is deployed with (as root, loopback only):
xinetd in the foreground with the repository's service file; a real
HAProxy with send-proxy and send-proxy-v2 in front of popd under
systemd-socket-activate, the log showing the client's address from the
header; fail2ban-regex with the shipped filter on the log lines these
sessions produced; and the locks of two sessions that reach one spool
through two mount namespaces.

Usage: tests/system/deploy.py PATH-TO-POPD [TEST-NAME-SUBSTRING]
"""
import contextlib
import os
import poplib
import re
import shutil
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import support  # noqa: E402
from support import (free_port, sh, IS_ROOT, POPD, SocketServer, Syslog, can_bind_dev_log, check, skip, check_equal,  # noqa: E402
                     client_form, login, make_mbox, wait_until_listening)

from support import TOP  # noqa: E402


class FromAddress(poplib.POP3):
    """poplib from a source address of our choosing (127.0.0.2, say)."""

    def __init__(self, host, port, source):
        self.source = source
        super().__init__(host, port, timeout=30)

    def _create_socket(self, timeout):
        return socket.create_connection((self.host, self.port), timeout, source_address=(self.source, 0))


def round_trip(pop, messages, delete=()):
    pop.user("alice")
    pop.pass_("secret")
    check_equal(pop.stat()[0], len(messages), "STAT")
    for i, m in enumerate(messages, 1):
        _, lines, _ = pop.retr(i)
        check_equal(b"".join(l + b"\r\n" for l in lines), client_form(m).encode(), f"RETR {i}")
    for i in delete:
        pop.dele(i)
    check(pop.quit().startswith(b"+OK"), "QUIT")


def closed(sock):
    """The server closed without a word (a reset, if it left input unread)."""
    try:
        return sock.recv(100) == b""
    except ConnectionResetError:
        return True


# --- xinetd -------------------------------------------------------------------

@contextlib.contextmanager
def xinetd(env, name="popd", args=()):
    """xinetd in the foreground with the repository's xinetd.d/NAME, as an
    administrator enables it, on a test port with the test's PAM and users
    (and `args` in place of the file's server_args); yields the port and
    xinetd's pid."""
    port = free_port()
    service = open(f"{TOP}/xinetd.d/{name}").read()
    check("disable\t\t= yes" in service, f"xinetd.d/{name} is not shipped disabled")
    arguments = " ".join(env.command(args)[1:])
    passed = dict(env.variables(), **{k: v for k, v in os.environ.items() if k in ("ASAN_OPTIONS", "UBSAN_OPTIONS")})
    if "ASAN_OPTIONS" in passed:
        # The chrooted pre-login process cannot read /proc for leak checks,
        # and under xinetd no standard error is kept to say so.
        passed["ASAN_OPTIONS"] += ":detect_leaks=0"
    variables = " ".join(f"{k}={v}" for k, v in passed.items())
    service = re.sub(r"\tserver_args\t= .*\n", "", service)
    service = (service.replace("/usr/local/sbin/popd", POPD).replace("disable\t\t= yes", "disable\t\t= no")
               .replace("\tprotocol\t= tcp\n", f"\tprotocol\t= tcp\n\ttype\t\t= UNLISTED\n\tport\t\t= {port}\n"
                        f"\tbind\t\t= 127.0.0.1\n\tserver_args\t= {arguments}\n\tenv\t\t= {variables}\n"))
    conf = env.dir + "/xinetd.conf"
    with open(conf, "w") as f:
        f.write("defaults\n{\n}\n" + service)
    process = subprocess.Popen(["xinetd", "-dontfork", "-f", conf, "-pidfile", env.dir + "/xinetd.pid"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_until_listening(port)
        yield port, process.pid
    finally:
        process.terminate()
        process.wait()


def test_xinetd_in_the_foreground(env):
    """The repository's xinetd.d/popd, as an administrator enables it."""
    if not IS_ROOT:
        return skip("xinetd runs services as root")
    messages, records = make_mbox(6, seed=31)
    env.write_mailbox("".join(records).encode())
    with xinetd(env) as (port, _):
        round_trip(poplib.POP3("127.0.0.1", port, timeout=30), messages, delete=[2])
    check_equal(open(env.mailbox(), "rb").read(), "".join(records[:1] + records[2:]).encode(), "after QUIT")


def server_socket_inode(client):
    """The inode of the server's end of a loopback TCP connection."""
    local = client.getsockname()[1]
    server = client.getpeername()[1]
    with open("/proc/net/tcp") as table:
        for fields in (line.split() for line in table.readlines()[1:]):
            if fields[1].endswith(f":{server:04X}") and fields[2].endswith(f":{local:04X}"):
                return fields[9]
    raise AssertionError("no server end of the connection in /proc/net/tcp")


def descriptors(pid):
    """fd -> what it is open on, of a process."""
    found = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            found[int(fd)] = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            pass
    return found


def popd_roles(spawner):
    """role -> pid of the popd processes of the connection `spawner`
    started: the monitor (root), the pre-auth process (popd) and the
    session (alice)."""
    roles = {0: "monitor", support.PRIVSEP_UID: "pre-auth", support.ALICE_UID: "session"}
    return {roles.get(uid, uid): pid for uid, pid in support.connection_processes(spawner).items()}


def test_xinetd_descriptors_match_design(env):
    """xinetd gives the client's socket as descriptors 0, 1 and 2. After a
    TLS login (xinetd.d/pop3s) and a plain one (xinetd.d/popd), each popd
    process holds what DESIGN's table says: the client's socket only in
    the process that talks to the client, and on 0 and 1 only; /dev/null
    on every standard descriptor that is not the socket; the mailbox only
    in the session."""
    if not IS_ROOT:
        return skip("xinetd runs services as root")
    from security import client_context, tls_files
    messages, records = make_mbox(3)
    env.write_mailbox("".join(records).encode())
    for name, args in (("pop3s", tls_files(env) + ["--tls-implicit"]), ("popd", [])):
        with xinetd(env, name, args) as (port, spawner):
            if name == "pop3s":
                pop = poplib.POP3_SSL("127.0.0.1", port, context=client_context(), timeout=30)
            else:
                pop = poplib.POP3("127.0.0.1", port, timeout=30)
            pop.user("alice")
            pop.pass_("secret")
            check_equal(pop.stat()[0], 3, "STAT")
            client = f"socket:[{server_socket_inode(pop.sock)}]"
            for _ in range(100):  # a plain pre-auth process exits after its hand-over
                roles = popd_roles(spawner)
                if name == "pop3s" or "pre-auth" not in roles:
                    break
                time.sleep(0.05)
            expected = ["monitor", "pre-auth", "session"] if name == "pop3s" else ["monitor", "session"]
            check_equal(sorted(roles), expected, f"{name}: popd processes")
            talks = "pre-auth" if name == "pop3s" else "session"
            for role, pid in roles.items():
                fds = descriptors(pid)
                where = f"{name}, {role}: {fds}"
                holding = sorted(fd for fd, target in fds.items() if target == client)
                if role == talks and role == "pre-auth":
                    check_equal(holding, [0, 1], f"{where}: the client's socket")
                elif role == talks:
                    check_equal(len(holding), 2, f"{where}: the client's socket, for input and output")
                else:
                    check_equal(holding, [], f"{where}: the client's socket")
                for fd in (0, 1, 2):
                    check(fds.get(fd) == "/dev/null" or fd in holding, f"{where}: descriptor {fd}")
                check_equal(env.mailbox() in fds.values(), role == "session", f"{where}: the mailbox")
            pop.quit()


# --- HAProxy and the PROXY protocol ------------------------------------------

HAPROXY = """global
    maxconn 100
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend v1
    bind 127.0.0.1:{v1}
    default_backend popd_v1
frontend v2
    bind 127.0.0.1:{v2}
    default_backend popd_v2
backend popd_v1
    server popd 127.0.0.1:{popd} send-proxy
backend popd_v2
    server popd 127.0.0.1:{popd} send-proxy-v2
"""


@contextlib.contextmanager
def haproxy(env, popd_port):
    v1, v2 = free_port(), free_port()
    conf = env.dir + "/haproxy.cfg"
    with open(conf, "w") as f:
        f.write(HAPROXY.format(v1=v1, v2=v2, popd=popd_port))
    process = subprocess.Popen(["haproxy", "-db", "-f", conf], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_until_listening(v1)
        wait_until_listening(v2)
        yield v1, v2
    finally:
        process.terminate()
        process.wait()


def syslog_file(lines, path):
    """Datagrams as a syslog daemon would write them (no <priority>)."""
    with open(path, "w") as f:
        for line in lines:
            f.write(re.sub(r"^<\d+>", "", line) + "\n")
    return path


def test_haproxy_send_proxy_v1_and_v2(env):
    if not can_bind_dev_log():
        return skip("needs root and no syslog daemon owning /dev/log")
    messages, records = make_mbox(5, seed=32)
    env.write_mailbox("".join(records).encode())
    with Syslog() as log, SocketServer(env, ["--proxy-protocol"]) as popd, haproxy(env, popd.port) as (v1, v2):
        round_trip(FromAddress("127.0.0.1", v1, "127.0.0.2"), messages)
        round_trip(FromAddress("127.0.0.1", v2, "127.0.0.3"), messages, delete=[1])
        for source, port in (("127.0.0.4", v1), ("127.0.0.5", v2)):
            pop = FromAddress("127.0.0.1", port, source)
            for _ in range(3):
                try:
                    pop.user("alice")
                    pop.pass_("wrong")
                except poplib.error_proto:
                    pass
            pop.close()
        # Straight to popd, bypassing the proxy: no header, closed unanswered.
        with socket.create_connection(("127.0.0.1", popd.port), timeout=10) as direct:
            direct.sendall(b"USER alice\r\n")
            check(closed(direct), "a connection without a PROXY header was answered")
        text = "\n".join(log.collect(until="rhost=127.0.0.5", wait=15))
    check(re.search(r"session end: user=alice rhost=127\.0\.0\.2 tls=no auth=user retr=5/\d+ top=0 dele=0 "
                    r"kept=5/\d+ duration=[\d.]+ result=quit", text), text)
    check(re.search(r"session end: user=alice rhost=127\.0\.0\.3 .* dele=1 kept=4/\d+ .*result=quit", text), text)
    check("login: user=alice rhost=127.0.0.2" in text and "login: user=alice rhost=127.0.0.3" in text, text)
    check(re.search(r"session end: user=alice rhost=127\.0\.0\.4 tls=no auth=- .* result=auth-failed", text), text)
    check("PROXY protocol: proxy=127.0.0.1: no PROXY protocol header; connection closed" in text, text)
    check("rhost=127.0.0.1 " not in text.replace("proxy=127.0.0.1", ""), "a session logged the proxy's address:\n" + text)
    check_equal(open(env.mailbox(), "rb").read(), "".join(records[1:]).encode(), "after QUIT through v2")

    # fail2ban's own tool and the shipped filter on these very lines.
    total, out = fail2ban_regex(env, log.lines)
    check_equal(total, 6, out)
    matched = re.findall(r"rhost=(127\.0\.0\.\d+) reason=", out)
    check_equal(sorted(set(matched)), ["127.0.0.4", "127.0.0.5"], "hosts fail2ban would ban")
    print(f"     HAProxy send-proxy and send-proxy-v2: sessions logged with the client's address; "
          f"fail2ban-regex matched {total} failed logins")


def fail2ban_regex(env, lines):
    """fail2ban's own tool with the shipped filter, installed beside
    fail2ban's common definitions as in /etc/fail2ban, on log lines."""
    path = syslog_file(lines, env.dir + "/mail.log")
    config = env.dir + "/fail2ban"
    if not os.path.exists(config):
        shutil.copytree("/etc/fail2ban", config)
    shutil.copy(f"{TOP}/fail2ban/filter.d/popd.conf", f"{config}/filter.d/popd.conf")
    p = subprocess.run(["fail2ban-regex", "-c", config, "--print-all-matched", path, "popd"],
                       capture_output=True, text=True, timeout=120)
    check_equal(p.returncode, 0, p.stdout + p.stderr)
    total = re.search(r"Failregex: (\d+) total", p.stdout)
    check(total, p.stdout)
    return int(total.group(1)), p.stdout


def test_fail2ban_matches_any_logged_name(env):
    """User names a client may send (bytes from 0x80 on: U+00A0, which
    Python's \\S does not match; Latin-1; a backslash) are logged escaped,
    one word each, and the shipped filter matches every failed login."""
    if not can_bind_dev_log():
        return skip("needs root and no syslog daemon owning /dev/log")
    names = [b"al\xc2\xa0ice", b"\xe9t\xe9", b"back\\slash", b"x\xff\xfe"]
    env.write_mailbox(b"")
    with Syslog() as log, SocketServer(env) as popd:
        for name in names:
            with socket.create_connection(("127.0.0.1", popd.port), source_address=("127.0.0.6", 0),
                                          timeout=20) as s:
                f = s.makefile("rb")
                f.readline()
                s.sendall(b"USER " + name + b"\r\n")
                check(f.readline().startswith(b"+OK"), f"USER {name!r}")
                s.sendall(b"PASS wrong\r\n")
                check(f.readline().startswith(b"-ERR [AUTH]"), f"PASS for {name!r}")
        lines = log.collect(until="user=x\\xff\\xfe rhost=127.0.0.6", wait=15)
    text = "\n".join(lines)
    for escaped in ("al\\xc2\\xa0ice", "\\xe9t\\xe9", "back\\x5cslash", "x\\xff\\xfe"):
        check(f"login failed: user={escaped} rhost=127.0.0.6 " in text, f"{escaped} not logged escaped:\n{text}")
    total, out = fail2ban_regex(env, lines)
    check_equal(total, len(names), f"failed logins fail2ban-regex matched:\n{out}")


def test_proxy_header_rules(env):
    """Without --proxy-protocol a header is a bad command; with it, only a
    listed proxy may send one."""
    env.write_mailbox(b"")
    out, _ = env.run(b"PROXY TCP4 198.51.100.7 192.0.2.1 51000 110\r\nQUIT\r\n")
    check("-ERR Unknown command" in out, out)
    with SocketServer(env, ["--proxy-protocol", "--proxy-from", "10.1.2.3,192.0.2.0/24"]) as popd:
        with socket.create_connection(("127.0.0.1", popd.port), timeout=10) as s:
            s.sendall(b"PROXY TCP4 198.51.100.7 192.0.2.1 51000 110\r\n")
            check(closed(s), "a header from an address not in --proxy-from was answered")
    with SocketServer(env, ["--proxy-protocol"]) as popd:
        for header in (b"PROXY TCP4 198.51.100.7 192.0.2.1 51000 110\r\n", b"PROXY UNKNOWN\r\n",
                       b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00"):  # v2 LOCAL: a health check
            with socket.create_connection(("127.0.0.1", popd.port), timeout=10) as s:
                s.sendall(header)
                check(s.recv(100).startswith(b"+OK"), f"greeting after {header!r}")
        for bad in (b"PROXY TCP4 198.51.100.7\r\n", b"\r\n\r\n\0\r\nQUIT\n\x31\x11\x00\x0c" + bytes(12)):
            with socket.create_connection(("127.0.0.1", popd.port), timeout=10) as s:
                s.sendall(bad)
                check(closed(s), f"a malformed header {bad!r} was answered")


# --- one spool, two mount namespaces -------------------------------------------

def test_two_mounts_of_one_spool_lock_each_other(env):
    """NFS cannot run here (no NFS server in the test machine), so the lock
    is shown through what NFS clients share: two sessions that see one spool
    directory under different paths, each in its own mount namespace (bind
    mounts), refuse each other with [IN-USE]."""
    if not IS_ROOT or subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode != 0:
        return skip("needs root and mount namespaces")
    messages, records = make_mbox(3, seed=33)
    env.write_mailbox("".join(records).encode())
    mounts = []
    for name in ("a", "b"):
        mounts.append(f"{env.dir}/mnt-{name}")
        os.mkdir(mounts[-1])

    def in_namespace(mount):
        # A private mount namespace where the spool directory is also at `mount`.
        command = env.command()
        command[command.index("--mailbox") + 1] = mount + "/%u"
        return ["unshare", "-m", "--propagation", "private", "sh", "-c",
                'mount --bind "$1" "$2" && shift 2 && exec "$@"', "sh", env.dir + "/mail", mount] + command

    variables = dict(os.environ, **env.variables())
    first = subprocess.Popen(in_namespace(mounts[0]), stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=variables)
    first.stdin.write(login().encode())
    first.stdin.flush()
    for _ in range(3):
        line = first.stdout.readline()
    check(line.startswith(b"+OK maildrop has 3 messages"), f"first session: {line!r}")
    second = subprocess.run(in_namespace(mounts[1]), input=(login() + "QUIT\r\n").encode(), capture_output=True,
                            env=variables, timeout=60)
    check(b"-ERR [IN-USE]" in second.stdout, second.stdout.decode() + second.stderr.decode())
    first.stdin.write(b"DELE 1\r\nQUIT\r\n")
    first.stdin.close()
    first.wait(timeout=30)
    check_equal(open(env.mailbox(), "rb").read(), "".join(records[1:]).encode(), "after the first session's QUIT")
    third = subprocess.run(in_namespace(mounts[1]), input=(login() + "STAT\r\nQUIT\r\n").encode(),
                           capture_output=True, env=variables, timeout=60)
    check(b"+OK 2 " in third.stdout, third.stdout.decode())


def on_host(env, mount, host, own_pids=False, args=()):
    """popd as another host would run it: in a mount namespace where the
    spool directory is (also) at `mount`, with a host name of its own (UTS
    namespace) and, with `own_pids`, a pid namespace of its own, where the
    pids of the first host's processes do not exist."""
    command = env.command(args)
    command[command.index("--mailbox") + 1] = mount + "/%u"
    return (["unshare", "-m", "-u"] + (["-p", "--fork"] if own_pids else []) +
            ["--propagation", "private", "sh", "-c",
             'hostname "$3" && mount --bind "$1" "$2" && shift 3 && exec "$@"', "sh", env.dir + "/mail", mount,
             host] + command)


def lock_identity(path):
    st = os.stat(path)
    return st.st_ino, st.st_ctime_ns, open(path, "rb").read()


def test_shared_spool_hosts_respect_each_others_locks(env):
    """Several hosts on one spool (popd.8, NFS): host A holds a session;
    host B, in a pid namespace where A's pids do not exist, gets [IN-USE]
    and leaves A's dotlock as it was. With the pid check of a local spool,
    B took A's fresh lock for stale (its pid is not alive on B), and its
    monitor then removed it: A's mailbox was left unguarded against MDAs.
    --shared-spool says so here; NFS and FUSE are found by statfs (FUSE
    below, with bindfs)."""
    if not IS_ROOT or subprocess.run(["unshare", "-m", "-u", "-p", "--fork", "true"],
                                     capture_output=True).returncode != 0:
        return skip("needs root and mount, UTS and pid namespaces")
    messages, records = make_mbox(3, seed=34)
    env.write_mailbox("".join(records).encode())
    lock = env.mailbox() + ".lock"
    mounts = {name: f"{env.dir}/mnt-{name}" for name in ("a", "b")}
    for mount in mounts.values():
        os.mkdir(mount)
    variables = dict(os.environ, **env.variables())
    a = subprocess.Popen(on_host(env, mounts["a"], "host-a", args=["--shared-spool"]), stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, env=variables)
    a.stdin.write(login().encode())
    a.stdin.flush()
    for _ in range(3):
        line = a.stdout.readline()
    check(line.startswith(b"+OK maildrop has 3 messages"), f"host A: {line!r}")
    held = lock_identity(lock)
    check_equal(held[2], b"0\n", "a shared spool's dotlock names no pid")
    b = subprocess.run(on_host(env, mounts["b"], "host-b", own_pids=True, args=["--shared-spool"]),
                       input=(login() + "QUIT\r\n").encode(), capture_output=True, env=variables, timeout=60)
    check(b"-ERR [IN-USE]" in b.stdout, b.stdout.decode() + b.stderr.decode())
    check_equal(lock_identity(lock), held, "A's dotlock after B's attempt")
    a.stdin.write(b"DELE 1\r\nQUIT\r\n")
    a.stdin.close()
    a.wait(timeout=30)
    check_equal(open(env.mailbox(), "rb").read(), "".join(records[1:]).encode(), "after A's QUIT")
    check(not os.path.exists(lock), "A's dotlock after its QUIT")


def test_fuse_spool_is_found_shared(env):
    """On FUSE (bindfs here; GlusterFS and sshfs are FUSE too) popd judges a
    dotlock by age alone without being told: a fresh lock whose pid does
    not exist is respected, where on the local file system under it the
    same lock is taken over as stale."""
    if not IS_ROOT or not shutil.which("bindfs"):
        return skip("needs root and bindfs")
    mount = env.dir + "/fuse"
    os.mkdir(mount)
    if subprocess.run(["bindfs", env.dir + "/mail", mount], capture_output=True).returncode != 0:
        return skip("bindfs cannot mount here (no /dev/fuse?)")
    try:
        env.write_mailbox(b"")
        lock = env.mailbox() + ".lock"
        with open(lock, "w") as f:
            f.write("999999999\n")  # above pid_max: no such process
        out, _ = env.run(login() + "QUIT\r\n", ["--mailbox", mount + "/%u"])
        check("-ERR [IN-USE]" in out, f"on FUSE: {out}")
        check(os.path.exists(lock), "on FUSE the lock was taken over")
        out, _ = env.run(login() + "QUIT\r\n")
        check("+OK maildrop has 0 messages" in out, f"on the local file system: {out}")
        check(not os.path.exists(lock), "the stale local lock is still there")
    finally:
        subprocess.run(["fusermount", "-u", mount], capture_output=True)


if __name__ == "__main__":
    support.run_tests([v for k, v in list(globals().items()) if k.startswith("test_")], "deploy",
                  sys.argv[2] if len(sys.argv) > 2 else "", debian_spool=True)
