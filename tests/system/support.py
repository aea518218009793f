"""What the system tests share: a directory with real PAM (pam_wrapper's
pam_matrix), users (nss_wrapper) and mail spools to run the real popd in
(Env), mailbox and message makers, checks, servers under
systemd-socket-activate, and run_tests, which runs a suite's test_*
functions each in a fresh Env.

The popd under test is the first argument of the suite's command line;
the second, if any, picks the tests whose names contain it.
"""
import fcntl
import os
import poplib
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository
POPD = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "./popd")
ONLY = sys.argv[2] if len(sys.argv) > 2 else ""
LIB = "/usr/lib/x86_64-linux-gnu"
MATRIX = LIB + "/pam_wrapper/pam_matrix.so"
IS_ROOT = os.geteuid() == 0
# As root, sessions run as a user that exists only in nss_wrapper's files.
ALICE_UID = 12345 if IS_ROOT else os.getuid()
ALICE_GID = 12345 if IS_ROOT else os.getgid()
BOB_UID = 12346 if IS_ROOT else os.getuid() + 1
PRIVSEP_UID = 12340  # the pre-login process's account, "popd", as the package makes it
MAIL_GID = 8  # Debian's "mail" group


class Env:
    """A directory with PAM service files, users and mail spools."""

    def __init__(self, debian_spool=False):
        self.dir = tempfile.mkdtemp(prefix="popd-e2e-")
        os.chmod(self.dir, 0o755)
        d = self.dir
        os.mkdir(d + "/pam")
        with open(d + "/passdb", "w") as f:
            f.write("alice:secret:popd\nbob:bobpw:popd\ncarol:carolpw:otherservice\n")
        for service in ("popd", "other"):
            with open(d + "/pam/" + service, "w") as f:
                for kind in ("auth", "account", "password", "session"):
                    f.write(f"{kind} required {MATRIX} passdb={d}/passdb\n")
        with open(d + "/passwd", "w") as f:
            f.write(f"alice:x:{ALICE_UID}:{ALICE_GID}:Alice:{d}/home/alice:/bin/sh\n")
            f.write(f"bob:x:{BOB_UID}:{BOB_UID}:Bob:{d}/home/bob:/bin/sh\n")
            f.write(f"carol:x:12347:12347:Carol:{d}/home/carol:/bin/sh\n")
            f.write("nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n")
            f.write(f"popd:x:{PRIVSEP_UID}:{PRIVSEP_UID}:popd:/nonexistent:/usr/sbin/nologin\n")
        with open(d + "/group", "w") as f:
            f.write(f"alice:x:{ALICE_GID}:\nbob:x:{BOB_UID}:\ncarol:x:12347:\nnogroup:x:65534:\n"
                    f"popd:x:{PRIVSEP_UID}:\n")
        # pam_wrapper's copies of its modules: here, not in /tmp, where a
        # session that switched users could not remove them.
        os.mkdir(d + "/pam-runtime")
        os.chmod(d + "/pam-runtime", 0o1777)
        os.mkdir(d + "/mail")
        if debian_spool and IS_ROOT:
            # As Debian's /var/mail: root:mail 2775. Users cannot create
            # dotlocks here; liblockfile's setgid helper dotlockfile can.
            os.chown(d + "/mail", 0, MAIL_GID)
            os.chmod(d + "/mail", 0o2775)
        else:
            os.chmod(d + "/mail", 0o1777)  # users create their own dotlocks here
        os.mkdir(d + "/home")
        for user, uid in (("alice", ALICE_UID), ("bob", BOB_UID)):
            os.mkdir(f"{d}/home/{user}")
            if IS_ROOT:
                os.chown(f"{d}/home/{user}", uid, uid)

    def cleanup(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def mailbox(self, user="alice"):
        return f"{self.dir}/mail/{user}"

    def write_mailbox(self, data, user="alice", uid=None):
        path = self.mailbox(user)
        with open(path, "wb") as f:
            f.write(data)
        if IS_ROOT:
            uid = uid if uid is not None else ALICE_UID if user == "alice" else BOB_UID
            os.chown(path, uid, uid)
        os.chmod(path, 0o600)
        return path

    def variables(self):
        return {
            "LD_PRELOAD": f"{LIB}/libpam_wrapper.so:{LIB}/libnss_wrapper.so",
            "PAM_WRAPPER": "1",
            "PAM_WRAPPER_SERVICE_DIR": self.dir + "/pam",
            "NSS_WRAPPER_PASSWD": self.dir + "/passwd",
            "NSS_WRAPPER_GROUP": self.dir + "/group",
            "PAM_WRAPPER_RUNTIME_DIR": self.dir + "/pam-runtime",
            # RTLD_DEEPBIND, which the wrappers use by default, and the
            # sanitizer runtimes exclude each other. pam_wrapper 1.1.4 reads
            # the uid_wrapper name of the switch.
            "PAM_WRAPPER_DISABLE_DEEPBIND": "1",
            "UID_WRAPPER_DISABLE_DEEPBIND": "1",
            "NSS_WRAPPER_DISABLE_DEEPBIND": "1",
        }

    def command(self, args=(), as_alice=False):
        cmd = [POPD, "--mailbox", self.dir + "/mail/%u", "--failure-delay", "0.1",
               "--privsep-dir", self.dir + "/empty"] + list(args)
        if as_alice and IS_ROOT:
            cmd = ["setpriv", f"--reuid={ALICE_UID}", f"--regid={ALICE_GID}", "--clear-groups"] + cmd
        return cmd

    def run(self, script, args=(), as_alice=False, timeout=30):
        env = dict(os.environ, **self.variables())
        p = subprocess.run(self.command(args, as_alice), input=script.encode() if isinstance(script, str) else script,
                           capture_output=True, env=env, timeout=timeout)
        return p.stdout.decode("latin-1"), p.returncode


def skip(why):
    print(f"     (skipped: {why})")


class Syslog:
    """Catches what popd sends to /dev/log, where no syslog daemon owns it,
    and reads it at once: a full queue would block popd in syslog()."""

    def __init__(self):
        self.lines = []

    def __enter__(self):
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.bind("/dev/log")
        self.socket.settimeout(0.2)
        self.running = True
        self.reader = threading.Thread(target=self._read)
        self.reader.start()
        return self

    def _read(self):
        while self.running:
            try:
                self.lines.append(self.socket.recv(8192).decode(errors="replace"))
            except socket.timeout:
                pass

    def collect(self, until, wait=5):
        """The lines so far, once one holds `until` (or `wait` is over)."""
        deadline = time.time() + wait
        while time.time() < deadline and not any(until in l for l in self.lines):
            time.sleep(0.05)
        time.sleep(0.3)  # the lines that come with it
        return list(self.lines)

    def __exit__(self, *exc):
        self.running = False
        self.reader.join()
        self.socket.close()
        os.unlink("/dev/log")


def can_bind_dev_log():
    return IS_ROOT and not os.path.exists("/dev/log")


# --- helpers -------------------------------------------------------------

def from_line(i):
    return f"From sender{i}@example.org Mon Jan  1 00:00:{i % 60:02d} 2024\n"


def make_message(i, rng):
    lines = [f"Subject: message {i}", f"Message-ID: <{i}.{rng.random()}@example.org>", "Status: RO", ""]
    for _ in range(rng.randrange(0, 30)):
        lines.append(rng.choice(["text", ".", "..dots", ".", "", ">From quoted", "x" * rng.randrange(1, 2000)]))
    return "\n".join(lines) + "\n"


def make_mbox(count, seed=1):
    rng = random.Random(seed)
    messages = [make_message(i, rng) for i in range(count)]
    records = [from_line(i) + m + "\n" for i, m in enumerate(messages)]
    return messages, records


def client_form(message):
    """What RETR must deliver: CRLF lines, Status header hidden."""
    lines = message.split("\n")[:-1]
    lines = [l for l in lines if not l.startswith("Status:")]
    return "".join(l + "\r\n" for l in lines)


def multiline(transcript, start):
    """The body of the multi-line reply starting at `start` (after its +OK line), de-stuffed."""
    body_start = transcript.index("\r\n", start) + 2
    end = transcript.index("\r\n.\r\n", body_start - 2) + 2 if not transcript.startswith(".\r\n", body_start) else body_start
    body = transcript[body_start:end]
    return "".join(l[1:] if l.startswith(".") else l for l in body.splitlines(keepends=True)), end + 3


def login(user="alice", password="secret"):
    return f"USER {user}\r\nPASS {password}\r\n"


def stat_of(path):
    st = os.stat(path)
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_uid, st.st_mode)


def check(condition, message="check failed"):
    if not condition:
        raise AssertionError(message)


def check_equal(got, expected, what=""):
    if got != expected:
        raise AssertionError(f"{what}\n  got:      {got!r}\n  expected: {expected!r}")


# --- servers and processes ----------------------------------------------


def wait_until_listening(port):
    """Waits until a socket listens on the port, as the kernel's table
    says. Not by connecting: that would start a popd whose pam_wrapper could
    race with the session's for its runtime directory. Not by binding: the
    port is taken a moment before it listens, and a connection in that
    moment is refused (seen once under the sanitizers)."""
    def listening():
        for name in ("/proc/net/tcp", "/proc/net/tcp6"):
            with open(name) as table:
                for fields in (line.split() for line in table.readlines()[1:]):
                    if fields[1].endswith(f":{port:04X}") and fields[3] == "0A":
                        return True
        return False

    for _ in range(200):
        if listening():
            return
        time.sleep(0.05)


class SocketServer:
    """popd under systemd-socket-activate --inetd on a free loopback port."""

    def __init__(self, env, args=()):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        cmd = ["systemd-socket-activate", "--inetd", "-a", "-l", f"127.0.0.1:{self.port}"]
        passed = dict(env.variables())
        passed.update({k: v for k, v in os.environ.items() if k in ("ASAN_OPTIONS", "UBSAN_OPTIONS")})
        for k, v in passed.items():
            cmd += ["-E", f"{k}={v}"]
        self.process = subprocess.Popen(cmd + env.command(args), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_until_listening(self.port)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.process.terminate()
        self.process.wait()


def wait_listening(port):
    """Until something accepts connections on the loopback port."""
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# The settings every Dovecot the tests compare with shares: its files in
# WORK, plain POP3 on PORT of the loopback, no failure delay.
DOVECOT_COMMON = """protocols = pop3
listen = 127.0.0.1
base_dir = {work}/run
state_dir = {work}/state
log_path = {work}/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_failure_delay = 0
service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {port}
  }}
}}
"""


class DovecotServer:
    """Dovecot's POP3 (dovecot -F) configured in `work` (made if missing)
    with DOVECOT_COMMON and `settings`, listening on self.port."""

    def __init__(self, work, settings):
        os.makedirs(work + "/run", exist_ok=True)
        os.chmod(work, 0o755)
        self.port = free_port()
        with open(work + "/dovecot.conf", "w") as f:
            f.write(DOVECOT_COMMON.format(work=work, port=self.port) + settings)
        self.server = subprocess.Popen(["dovecot", "-F", "-c", work + "/dovecot.conf"])
        try:
            wait_listening(self.port)
        except BaseException:
            self.stop()
            raise

    def stop(self):
        self.server.terminate()
        self.server.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()



def sh(*args, **kw):
    """Runs a command; its standard output, or a failed check with both outputs."""
    p = subprocess.run(list(args), capture_output=True, text=True, **kw)
    check(p.returncode == 0, f"{args}: {p.stdout[-2000:]} {p.stderr[-2000:]}")
    return p.stdout


def popd_processes_by_uid(spawner):
    """uid -> (uids, gids, groups, root directory) of each popd process of
    the connections `spawner` started (connection_processes)."""
    found = {}
    for uid, pid in connection_processes(spawner).items():
        try:
            status = open(f"/proc/{pid}/status").read()
            root = os.readlink(f"/proc/{pid}/root")
        except OSError:
            continue
        fields = dict(l.split(":", 1) for l in status.splitlines() if ":" in l)
        uids, gids, groups = fields["Uid"].split(), fields["Gid"].split(), fields["Groups"].split()
        found[str(uid)] = (uids, gids, groups, root)
    return found


def connection_processes(spawner):
    """uid -> pid of the popd processes of the connections `spawner` (a
    systemd-socket-activate or xinetd pid) started: each monitor, its
    child, and the monitor's children. Leftovers of earlier connections
    (a session lingering for the client's close) are not counted."""
    parents, uids = {}, {}
    for pid in os.listdir("/proc"):
        try:
            if pid.isdigit() and os.readlink(f"/proc/{pid}/exe") == POPD:
                status = open(f"/proc/{pid}/status").read()
                parents[int(pid)] = int(status.split("PPid:")[1].split()[0])
                uids[int(pid)] = int(status.split("Uid:")[1].split()[0])
        except OSError:
            continue
    monitors = [pid for pid, parent in parents.items() if parent == spawner]
    return {uids[pid]: pid for pid in parents if pid in monitors or parents[pid] in monitors}


def popd_pid_of_uid(uid):
    """The pid of the running popd whose real uid is `uid`."""
    for pid in os.listdir("/proc"):
        try:
            if pid.isdigit() and os.readlink(f"/proc/{pid}/exe") == POPD and \
                    open(f"/proc/{pid}/status").read().split("Uid:")[1].split()[0] == str(uid):
                return int(pid)
        except OSError:
            continue
    raise AssertionError(f"no popd process of uid {uid}")


def check_pre_auth_processes(env, spawner):
    """As root, before login: the monitor (root, for PAM) and the pre-auth
    process (popd, chrooted to an empty directory) that talks to the client."""
    found = popd_processes_by_uid(spawner)
    privsep = str(PRIVSEP_UID)
    check_equal(sorted(found), sorted(["0", privsep]), "popd processes by uid before login")
    uids, gids, groups, root = found[privsep]
    check_equal((uids, gids, groups), ([privsep] * 4, [privsep] * 4, []), "pre-auth process ids")
    check_equal(root, env.dir + "/empty", "pre-auth process root directory")
    check_equal(os.listdir(root), [], "pre-auth root directory is empty")


def check_session_processes(env, spawner):
    """As root, after a plain login: the monitor and the session (the user,
    no root or mail group), which serves the client itself; the pre-auth
    process has handed the connection over and is gone."""
    for _ in range(100):
        found = popd_processes_by_uid(spawner)
        if str(PRIVSEP_UID) not in found:
            break
        time.sleep(0.05)
    check_equal(sorted(found), sorted(["0", str(ALICE_UID)]), "popd processes by uid after login")
    uids, gids, groups, root = found[str(ALICE_UID)]
    check_equal(uids, [str(ALICE_UID)] * 4, "session uids")
    check_equal(gids, [str(ALICE_GID)] * 4, "session gids")
    check("0" not in groups and str(MAIL_GID) not in groups + gids, f"session groups {groups}")
    check_equal(root, "/", "session root directory")


def run_tests(tests, label, only="", debian_spool=False):
    """Runs each test in a fresh Env; prints one line each and a summary."""
    passed = failed = 0
    for test in tests:
        if only and only not in test.__name__:
            continue
        env = Env(debian_spool)
        try:
            start = time.time()
            test(env)
            passed += 1
            print(f"ok   {test.__name__} ({time.time() - start:.1f}s)")
        except Exception:
            failed += 1
            print(f"FAIL {test.__name__}")
            traceback.print_exc()
        finally:
            env.cleanup()
    print(f"{label} ({'root' if IS_ROOT else 'unprivileged'}): {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)
