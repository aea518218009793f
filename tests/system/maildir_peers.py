#!/usr/bin/env python3
"""Maildir beside the real programs that share it: the delivery agents
that fill it (procmail, maildrop, Dovecot's LDA, Postfix's local) and the
servers popd replaces (Dovecot, Courier), whose unique-ids popd must list.
As root only (the peers switch to the user). Debian's packages: Postfix
installed (each test runs an instance of its own); Courier's and
maildrop's unpacked, not installed: they would bring another MTA along.

Usage: tests/system/maildir_peers.py PATH-TO-POPD [TEST-NAME-SUBSTRING]
"""
import glob
import os
import poplib
import re
import shutil
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from support import *  # noqa: E402,F401,F403  (the helpers every test here uses)
from support import ONLY, run_tests  # noqa: E402
from maildir import MESSAGES, Maildir, listed_size, replies, wire  # noqa: E402

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PEERS = f"{TOP}/build/peers"


# Files whose last line has no LF (which no delivery agent writes) are
# left out of the comparisons: popd counts them as Dovecot does, but
# Dovecot also writes its own size into names.
WHOLE_LINES = [m for m in MESSAGES if m.endswith(b"\n")]
# Courier's pop3d sends a CRLF line as CR CR LF, and counts it so: its
# sizes are compared on LF files only.
LF_LINES = [m for m in WHOLE_LINES if b"\r" not in m]


def as_alice():
    return ["setpriv", f"--reuid={ALICE_UID}", f"--regid={ALICE_GID}", "--clear-groups"]


def unpacked(name, packages):
    """Debian packages unpacked under build/peers/NAME; (root, LD_LIBRARY_PATH)."""
    root = f"{PEERS}/{name}"
    if not os.path.exists(f"{root}/.done"):
        shutil.rmtree(root, ignore_errors=True)
        os.makedirs(f"{root}/debs")
        subprocess.run(["apt-get", "download"] + packages, cwd=f"{root}/debs", check=True, capture_output=True)
        for deb in glob.glob(f"{root}/debs/*.deb"):
            subprocess.run(["dpkg", "-x", deb, root], check=True)
        # No set-id bits: run from here, as the user, with LD_LIBRARY_PATH.
        subprocess.run(["chmod", "-R", "u-s,g-s", root], check=True)
        open(f"{root}/.done", "w").close()
    libraries = sorted({os.path.dirname(p) for p in glob.glob(f"{root}/usr/lib/**/*.so*", recursive=True)})
    return root, ":".join(libraries)


def open_to_peers(env):
    """The peers run as alice for real: the test's directories must let her in."""
    os.chmod(env.dir, 0o755)
    os.chmod(env.dir + "/home", 0o755)
    os.chown(env.dir + "/home/alice", ALICE_UID, ALICE_GID)


def uidl_and_list(out):
    """(ids, sizes) from a transcript with UIDL then LIST (any server's
    wording of their first lines)."""
    listings = [part.split("\r\n") for part in out.split("\r\n.\r\n")[:2]]
    ids, sizes = ([line.split()[1] for line in lines if re.fullmatch(r"\d+ \S+", line)] for lines in listings)
    return ids, sizes


def popd_view(box, scheme):
    out = box.run(login() + "UIDL\r\nLIST\r\nQUIT\r\n", args=["--uidl-scheme", scheme])
    check("+OK unique-id listing follows" in out, out)
    return uidl_and_list(out)


def list_uids(box, scheme):
    p = subprocess.run([POPD, "--list-uids", box.path, "--uidl-scheme", scheme], capture_output=True, text=True)
    check(p.returncode == 0, p.stderr)
    return [line.split()[1] for line in p.stdout.splitlines()]


# --- Dovecot -----------------------------------------------------------------------

DOVECOT = """passdb {{
  driver = passwd-file
  args = {work}/passwd
}}
userdb {{
  driver = passwd-file
  args = {work}/passwd
}}
mail_location = maildir:~/Maildir
first_valid_uid = 1000
pop3_uidl_format = %08Xu%08Xv
"""


class Dovecot(DovecotServer):
    """Dovecot serving alice's Maildir."""

    def __init__(self, env):
        work = env.dir + "/dovecot"
        os.makedirs(work, exist_ok=True)
        with open(f"{work}/passwd", "w") as f:
            f.write(f"alice:{{PLAIN}}secret:{ALICE_UID}:{ALICE_GID}::{env.dir}/home/alice::\n")
        super().__init__(work, DOVECOT.format(work=work))

    def view(self, delete=()):
        pop = poplib.POP3("127.0.0.1", self.port, timeout=30)
        pop.user("alice")
        pop.pass_("secret")
        ids = [line.decode().split()[1] for line in pop.uidl()[1]]
        sizes = [line.decode().split()[1] for line in pop.list()[1]]
        for number in delete:
            pop.dele(number)
        pop.quit()
        return ids, sizes



def test_dovecot_ids(env):
    """Dovecot serving the same Maildir and popd with --uidl-scheme dovecot
    list the same ids and sizes in the same order: at first, after new
    deliveries (once Dovecot has seen them) and after deletions by either."""
    if not IS_ROOT or not shutil.which("dovecot"):
        return skip("needs root and Dovecot")
    open_to_peers(env)
    box = Maildir(env)
    for i, m in enumerate(WHOLE_LINES * 2):
        box.deliver(m, sized=i % 2 == 0, folder="cur" if i % 3 == 0 else "new", flags="S")
    dovecot = Dovecot(env)
    try:
        theirs = dovecot.view()
        check(os.path.exists(box.path + "/dovecot-uidlist"), "Dovecot wrote no dovecot-uidlist")
        check(re.fullmatch(r"[0-9a-f]{16}", theirs[0][0]) is not None, f"Dovecot's id {theirs[0][0]}")
        check_equal(popd_view(box, "dovecot"), theirs, "popd's UIDL and LIST, dovecot scheme")
        check_equal(list_uids(box, "dovecot"), theirs[0], "popd --list-uids, dovecot scheme")
        for m in MESSAGES[:2]:
            box.deliver(m)
        theirs = dovecot.view()
        check_equal(popd_view(box, "dovecot"), theirs, "after new mail Dovecot has listed")
        out = box.run(login() + "DELE 1\r\nDELE 4\r\nQUIT\r\n", args=["--uidl-scheme", "dovecot"])
        check(out.endswith("(2 messages deleted)\r\n"), out)
        theirs = dovecot.view(delete=(2,))
        check_equal(len(theirs[0]), len(WHOLE_LINES) * 2, "Dovecot's listing after popd's deletions")
        check_equal(popd_view(box, "dovecot"), (theirs[0][:1] + theirs[0][2:], theirs[1][:1] + theirs[1][2:]),
                    "after deletions by popd and by Dovecot")
        # Mail Dovecot never saw: popd's own id (the base name), after the known ones.
        late = box.deliver(MESSAGES[0])
        ids, _ = popd_view(box, "dovecot")
        check_equal(ids[-1], late, "the id of mail Dovecot never listed")
    finally:
        dovecot.stop()
    print(f"     Dovecot {subprocess.run(['dovecot', '--version'], capture_output=True, text=True).stdout.split()[0]}:"
          " the same ids and sizes, before and after new mail and deletions")


# --- Courier -----------------------------------------------------------------------

def courier(env, box, script):
    """Courier's pop3d, as its login process starts it once the user is
    authenticated: in the home, on the Maildir, as the user."""
    root, libraries = unpacked("courier", ["courier-pop", "courier-base", "courier-authlib", "libcourier-unicode4"])
    binary = f"{root}/usr/lib/courier/courier/courierpop3d"
    environment = dict(os.environ, AUTHENTICATED="alice", LD_LIBRARY_PATH=libraries, TCPREMOTEIP="127.0.0.1")
    p = subprocess.run(as_alice() + [binary, "Maildir"], input=script.encode(), capture_output=True,
                       cwd=env.dir + "/home/alice", env=environment, timeout=60)
    return p.stdout.decode("latin-1")


def test_courier_ids(env):
    """Courier's pop3d on the same Maildir and popd with --uidl-scheme
    courier list the same ids and sizes, before and after new mail and
    deletions."""
    if not IS_ROOT:
        return skip("needs root")
    open_to_peers(env)
    box = Maildir(env)
    for i, m in enumerate(LF_LINES * 3):
        box.deliver(m, sized=i % 2 == 0, folder="cur" if i % 3 == 0 else "new", flags="S")
    theirs = uidl_and_list(courier(env, box, "UIDL\r\nLIST\r\nQUIT\r\n"))
    check(os.path.exists(box.path + "/courierpop3dsizelist"), "Courier wrote no courierpop3dsizelist")
    check(re.fullmatch(r"UID1-\d+", theirs[0][0]) is not None, f"Courier's id {theirs[0][0]}")
    check_equal(popd_view(box, "courier"), theirs, "popd's UIDL and LIST, courier scheme")
    check_equal(list_uids(box, "courier"), theirs[0], "popd --list-uids, courier scheme")
    box.deliver(LF_LINES[1])
    theirs = uidl_and_list(courier(env, box, "UIDL\r\nLIST\r\nQUIT\r\n"))
    out = box.run(login() + "DELE 2\r\nQUIT\r\n", args=["--uidl-scheme", "courier"])
    check(out.endswith("(1 messages deleted)\r\n"), out)
    after = uidl_and_list(courier(env, box, "UIDL\r\nLIST\r\nQUIT\r\n"))
    check_equal(after, (theirs[0][:1] + theirs[0][2:], theirs[1][:1] + theirs[1][2:]), "Courier after popd's DELE")
    check_equal(popd_view(box, "courier"), after, "popd after new mail and a deletion")
    print("     Courier's pop3d (courier-pop, unpacked): the same ids and sizes, before and after new mail and "
          "a deletion")


# --- delivery agents ---------------------------------------------------------------

def deliver_with(agent, env, box, message):
    home = env.dir + "/home/alice"
    environment = dict(os.environ, HOME=home, USER="alice", LOGNAME="alice")
    if agent == "procmail":
        command = ["procmail", "-p", f"DEFAULT={box.path}/", "/dev/null"]
    elif agent == "maildrop":
        root, libraries = unpacked("maildrop", ["maildrop", "courier-authlib", "libcourier-unicode4"])
        rc = f"{home}/.mailfilter"
        with open(rc, "w") as f:
            f.write(f'to "{box.path}/"\n')
        os.chown(rc, ALICE_UID, ALICE_GID)
        os.chmod(rc, 0o600)
        environment["LD_LIBRARY_PATH"] = libraries
        environment.update({k: v for k, v in env.variables().items() if k.startswith("NSS_WRAPPER")})
        environment["LD_PRELOAD"] = "/usr/lib/x86_64-linux-gnu/libnss_wrapper.so"  # alice is the test's user
        command = [f"{root}/usr/bin/maildrop", rc]
    else:  # Dovecot's LDA, as Postfix's mailbox_command runs it
        config = f"{home}/lda.conf"
        with open(config, "w") as f:
            f.write(f"mail_location = maildir:{box.path}\npostmaster_address = postmaster@example.org\n"
                    f"log_path = {home}/lda.log\n")
        command = ["/usr/lib/dovecot/dovecot-lda", "-c", config, "-f", "sender@example.org"]
    p = subprocess.run(as_alice() + command, input=message, capture_output=True, env=environment, timeout=60)
    check(p.returncode == 0, f"{agent}: {p.returncode} {p.stderr!r}")


def test_delivery_agents(env):
    """procmail, maildrop and Dovecot's LDA deliver into the Maildir; popd
    serves each file byte for byte (CRLF line ends), with LIST's sizes."""
    if not IS_ROOT:
        return skip("needs root")
    open_to_peers(env)
    box = Maildir(env)
    agents = ("procmail", "maildrop", "dovecot-lda")
    for agent in agents:
        for m in MESSAGES:
            deliver_with(agent, env, box, b"Subject: via " + agent.encode() + b"\n" + m)
    names = sorted(box.names(), key=lambda n: (int(n.split("/")[1].split(".")[0]), n.split("/")[1].split(":")[0]))
    check_equal(len(names), len(agents) * len(MESSAGES), "messages delivered")
    count = len(names)
    out = box.run(login() + "LIST\r\n" + "".join(f"RETR {i}\r\n" for i in range(1, count + 1)) + "QUIT\r\n")
    got = replies(out)
    sizes = [int(line.split()[1]) for line in got[0][1].split("\r\n")[:-1]]
    served = sorted(body.encode("latin-1") for _, body in got[1:])
    stored = sorted(wire(open(f"{box.path}/{n}", "rb").read()) for n in names)
    check_equal(served, stored, "what popd served against the files the agents wrote")
    check_equal(sorted(sizes), sorted(listed_size(open(f"{box.path}/{n}", "rb").read()) for n in names), "LIST sizes")
    for agent in agents:
        check(any(b"via " + agent.encode() in s for s in stored), f"nothing delivered by {agent}")


class Postfix:
    """A Postfix instance of the test's own (its main.cf, queue and log in
    the test's directory; no network service, no chroot), whose local(8)
    delivers to ~/Maildir/ of a system account made for the test with
    alice's uid and home: local looks the recipient up in the real
    passwd file, popd in nss_wrapper's."""
    USER = "popd-test-postfix"

    def __init__(self, env):
        self.config = env.dir + "/postfix"
        base = env.dir + "/postfix-state"
        os.makedirs(self.config)
        os.makedirs(f"{base}/queue")
        os.makedirs(f"{base}/data")
        shutil.chown(f"{base}/data", "postfix")
        with open(f"{self.config}/main.cf", "w") as f:
            f.write(f"""compatibility_level = 3.6
queue_directory = {base}/queue
data_directory = {base}/data
maillog_file = {base}/maillog
maillog_file_prefixes = {base}
myhostname = popd-test.localdomain
mydestination = localhost, $myhostname
inet_interfaces = loopback-only
master_service_disable = inet
alias_maps =
alias_database =
biff = no
home_mailbox = Maildir/
mailbox_command =
""")
        # Debian's services, none chrooted (a chroot would need copies of
        # /etc files in the queue directory).
        with open("/etc/postfix/master.cf") as src, open(f"{self.config}/master.cf", "w") as dst:
            for line in src:
                fields = line.split()
                if len(fields) >= 8 and not line[0].isspace() and not line.startswith("#"):
                    fields[4] = "n"
                    line = " ".join(fields) + "\n"
                dst.write(line)
        self.remove_account()
        sh("groupadd", "--non-unique", "--gid", str(ALICE_GID), self.USER)
        sh("useradd", "--no-create-home", "--non-unique", "--uid", str(ALICE_UID), "--gid", str(ALICE_GID),
           "--home-dir", env.dir + "/home/alice", "--shell", "/usr/sbin/nologin", self.USER)
        self.log = f"{base}/maillog"
        started = subprocess.run(["postfix", "-c", self.config, "start"], capture_output=True)
        if started.returncode != 0:
            self.stop()  # no account left behind
        check(started.returncode == 0, f"postfix start: {self.log_tail()}")  # it tells only a terminal or its log

    def log_tail(self):
        return open(self.log).read()[-2000:] if os.path.exists(self.log) else "(no log)"

    def send(self, message):
        """Through Postfix's sendmail, as a user's mail program would."""
        p = subprocess.run(["/usr/sbin/sendmail", "-i", "-f", "sender@example.org", f"{self.USER}@localhost"],
                           input=message, capture_output=True, env=dict(os.environ, MAIL_CONFIG=self.config),
                           timeout=60)
        check(p.returncode == 0, f"sendmail: {p.returncode} {p.stderr!r}")

    def wait_delivered(self, box, count):
        deadline = time.time() + 60
        while len(box.names()) < count and time.time() < deadline:
            time.sleep(0.05)
        check_equal(len(box.names()), count, f"messages Postfix delivered; its log:\n{self.log_tail()}")

    def stop(self):
        subprocess.run(["postfix", "-c", self.config, "abort"], capture_output=True)
        self.remove_account()

    def remove_account(self):
        subprocess.run(["userdel", self.USER], capture_output=True)
        subprocess.run(["groupdel", self.USER], capture_output=True)


def test_postfix_local_delivery(env):
    """Postfix's local(8) with home_mailbox = Maildir/, mail sent through
    its sendmail: popd serves each file byte for byte; a delivery during a
    session does not wait for it and shows at the next login."""
    if not IS_ROOT or not shutil.which("postfix"):
        return skip("needs root and Postfix")
    open_to_peers(env)
    postfix = Postfix(env)
    try:
        box = Maildir(env)
        for i, m in enumerate(WHOLE_LINES):
            postfix.send(b"Subject: via postfix %d\n" % i + m)
        postfix.wait_delivered(box, len(WHOLE_LINES))
        names = sorted(box.names())
        out = box.run(login() + "LIST\r\n" + "".join(f"RETR {i}\r\n" for i in range(1, len(names) + 1)))
        got = replies(out)
        check_equal(sorted(body.encode("latin-1") for _, body in got[1:]),
                    sorted(wire(open(f"{box.path}/{n}", "rb").read()) for n in names), "served against stored")
        check_equal(sorted(int(line.split()[1]) for line in got[0][1].split("\r\n")[:-1]),
                    sorted(listed_size(open(f"{box.path}/{n}", "rb").read()) for n in names), "LIST sizes")
        check(all(b"Delivered-To: " + Postfix.USER.encode() in s.encode("latin-1") for _, s in got[1:]),
              "a message that local(8) did not deliver")
        # A session holds the Maildir while Postfix delivers one more.
        session = subprocess.Popen(env.command(["--mailbox", "%h/Maildir/"]), stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, env=dict(os.environ, **env.variables()))
        session.stdin.write((login() + "STAT\r\n").encode())
        session.stdin.flush()
        while b"+OK " + str(len(names)).encode() not in (line := session.stdout.readline()):
            check(line != b"", "popd ended before STAT's answer")
        postfix.send(b"Subject: during a session\n\nhello\n")
        postfix.wait_delivered(box, len(names) + 1)
        out = session.communicate("".join(f"DELE {i}\r\n" for i in range(1, len(names) + 1)).encode() +
                                  b"QUIT\r\n", timeout=30)[0].decode()
        check(out.endswith(f"({len(names)} messages deleted)\r\n"), out)
        out = box.run(login() + "STAT\r\nRETR 1\r\nQUIT\r\n")
        check("+OK 1 " in out and "Subject: during a session" in out, out)
    finally:
        postfix.stop()


def test_deliveries_racing_sessions(env):
    """1,000 deliveries by procmail racing 50 sessions that each delete what
    they retrieved: nothing lost, nothing twice, every QUIT +OK."""
    if not IS_ROOT:
        return skip("needs root")
    open_to_peers(env)
    box = Maildir(env)
    total, sessions = 1000, 50
    seen, failures = [], []

    def deliver():
        for i in range(total):
            deliver_with("procmail", env, box, b"Subject: number %d\n\nbody %d\n" % (i, i))

    thread = threading.Thread(target=deliver)
    thread.start()
    for n in range(sessions):
        if n == sessions - 1:
            thread.join()
        out = box.run(login() + "STAT\r\n")
        count = int(re.search(r"\+OK (\d+) \d+\r\n", out).group(1))
        out = box.run(login() + "".join(f"RETR {i}\r\nDELE {i}\r\n" for i in range(1, count + 1)) + "QUIT\r\n")
        if not out.endswith("messages deleted)\r\n"):
            failures.append(out[-200:])
        seen += [int(m) for m in re.findall(r"Subject: number (\d+)\r\n", out)]
        time.sleep(0.05)
    thread.join()
    out = box.run(login() + "".join(f"RETR {i}\r\nDELE {i}\r\n" for i in range(1, total + 1)) + "QUIT\r\n")
    seen += [int(m) for m in re.findall(r"Subject: number (\d+)\r\n", out)]
    check_equal(failures, [], "sessions whose QUIT failed")
    check_equal(sorted(seen), list(range(total)), "each delivered message retrieved exactly once")
    check_equal(box.names(), set(), "the Maildir at the end")
    print(f"     {total} deliveries by procmail, {sessions} sessions deleting what they retrieved: "
          f"{len(seen)} retrieved once each, none lost")


if __name__ == "__main__":
    run_tests([v for k, v in list(globals().items()) if k.startswith("test_")], "maildir peers", ONLY)
