#!/usr/bin/env python3
"""What a local user or a hostile process can try against the real popd
binary, run as root with privilege separation, real PAM (pam_wrapper) and
nss_wrapper users: files planted beside a victim's, and the processes'
descriptors, memory and limits.

Usage: tests/system/hardening.py PATH-TO-POPD PATH-TO-LIBFAULTS PATH-TO-PAM-LOOKUP-MODULE [TEST-NAME-SUBSTRING]
(the fault shim and the PAM module, tests/faults/ and tests/pam/, are built by make check)
"""
import ctypes
import hashlib
import os
import fcntl
import socket
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
SHIM = os.path.abspath(sys.argv[2])
LOOKUP_MODULE = os.path.abspath(sys.argv[3])
ONLY = sys.argv[4] if len(sys.argv) > 4 else ""
sys.argv = sys.argv[:2]
import support  # noqa: E402
from support import ALICE_UID, BOB_UID, IS_ROOT, MATRIX, SocketServer, check, check_equal, login, make_mbox, \
    run_tests  # noqa: E402

SECURITY = "/usr/lib/x86_64-linux-gnu/security"

SHARE_GID = 12350  # a group alice and bob share


class Xxh128(ctypes.Structure):
    _fields_ = [("low64", ctypes.c_uint64), ("high64", ctypes.c_uint64)]


_xxhash = ctypes.CDLL("libxxhash.so.0")
_xxhash.XXH3_128bits.restype = Xxh128
_xxhash.XXH3_128bits.argtypes = (ctypes.c_char_p, ctypes.c_size_t)


def journal_sum(version, data):
    """The journal's 32-byte checksum: SHA-256 in version 1, XXH3-128
    (canonical, zero-padded) since."""
    if version == 1:
        return hashlib.sha256(data).digest()
    h = _xxhash.XXH3_128bits(data, len(data))
    return struct.pack(">QQ", h.high64, h.low64) + bytes(16)


def round_up(n, block=4096):
    return (n + block - 1) // block * block


def planted_journal(version, spool, begin, payload):
    """A journal of each version that, were it trusted, would change the
    spool: versions 1 and 2 roll `payload` back into [begin, ...); version 3
    redoes a step from its saved bytes (the payload); version 4 deletes
    [begin, begin + len(payload)) by a commit of its own."""
    st = os.stat(spool)
    end = st.st_size
    if version in (1, 2):
        header = struct.pack("=16s5Q", f"popd-journal-{version}\n".encode(), st.st_dev, st.st_ino, begin,
                             begin + len(payload), end)
        return header + payload + journal_sum(version, header + payload)
    removed = len(payload)
    kept_end = end - removed
    header = struct.pack("=16s7Q16s", f"popd-journal-{version}\n".encode(), st.st_dev, st.st_ino, begin, kept_end,
                         end, 1, 1, b"random marker...")
    ranges = struct.pack("=2Q", begin, begin + removed)
    if version == 3:
        steps = struct.pack("=3Q", begin, kept_end, kept_end)
        saved = payload * ((kept_end - begin) // len(payload) + 1)
        plan = header + ranges + steps + saved[:kept_end - begin]
        data = plan + journal_sum(3, plan)
        return data + bytes(round_up(len(data)) - len(data) + 2 * 4096)
    steps = struct.pack("=3Q", begin, kept_end, begin)  # nothing to save: the gap is the step
    plan = header + ranges + steps
    data = plan + journal_sum(4, plan)
    return data + bytes(round_up(len(data)) - len(data) + 3 * 4096)


def shared_directory(env, kind):
    """A directory alice and bob can both write: sticky like /tmp, or a
    group-shared one (setgid, group-writable)."""
    path = f"{env.dir}/shared-{kind}"
    os.mkdir(path)
    if kind == "sticky":
        os.chmod(path, 0o1777)
    else:
        os.chown(path, 0, SHARE_GID)
        os.chmod(path, 0o2770)
    return path


def add_share_group(env):
    with open(env.dir + "/group", "a") as f:
        f.write(f"share:x:{SHARE_GID}:alice,bob\n")


def test_planted_journal_is_never_applied(env):
    """Bob plants a journal of each version, naming alice's spool, where
    alice's journal goes (--journal in a shared directory): alice's login
    is refused with [SYS/TEMP], logged, and her mailbox stays
    byte-identical; the planted file is left for the administrator. In a
    sticky directory alice's own journal is still applied; in one that her
    group-mates may change (where bob could put back an old journal of
    alice's, which names her mailbox but not its present bytes) not even
    hers is, and no commit makes one there."""
    if not IS_ROOT:
        print("     (skipped: needs root)")
        return
    add_share_group(env)
    messages, records = make_mbox(6)
    original = "".join(records).encode()
    refusals = {"sticky": "Recovery journal is not the user's own file",
                "group": "Recovery journal is where others can change it"}
    for kind in ("sticky", "group"):
        directory = shared_directory(env, kind)
        args = ["--journal", directory + "/%u.journal"]
        journal = f"{directory}/alice.journal"
        for version in (1, 2, 3, 4):
            path = env.write_mailbox(original)
            with open(journal, "wb") as f:
                f.write(planted_journal(version, path, len(records[0]), b"X" * len(records[1])))
            os.chown(journal, BOB_UID, SHARE_GID if kind == "group" else BOB_UID)
            os.chmod(journal, 0o644 if version % 2 else 0o666)
            out, _ = env.run(login() + "STAT\r\nQUIT\r\n", args)
            check("-ERR [SYS/TEMP] " + refusals[kind] in out, f"{kind} directory, version {version}: {out}")
            check_equal(open(path, "rb").read(), original, f"{kind} directory, version {version}: the mailbox")
            check(os.path.exists(journal), "the planted journal was removed")
            os.unlink(journal)
        # The same journal as alice's own: applied in the sticky directory
        # (the planted one was refused for whose it is, not for what it
        # says), not where bob could have put it back.
        path = env.write_mailbox(original)
        with open(journal, "wb") as f:
            f.write(planted_journal(1, path, len(records[0]), b"X" * len(records[1])))
        os.chown(journal, ALICE_UID, ALICE_UID)
        os.chmod(journal, 0o600)
        out, _ = env.run(login() + "QUIT\r\n", args)
        if kind == "sticky":
            check("+OK maildrop has" in out, out)
            check(open(path, "rb").read() != original, "alice's own journal was not applied")
            continue
        check("-ERR [SYS/TEMP] " + refusals[kind] in out, f"alice's own journal in the group directory: {out}")
        check_equal(open(path, "rb").read(), original, "the mailbox after alice's own journal in the group directory")
        os.unlink(journal)
        out, _ = env.run(login() + "DELE 2\r\nQUIT\r\n", args)
        check("-ERR [SYS/TEMP] Deletions not committed: the recovery journal's directory can be changed by others"
              in out, f"a commit with its journal in the group directory: {out}")
        check_equal(open(path, "rb").read(), original, "the mailbox after a refused commit")
        check(not os.path.exists(journal), "a journal was made in the group directory")


def test_planted_uidvalidity_is_not_read(env):
    """A UIDVALIDITY file bob planted where alice's goes changes no id:
    the login is refused with [SYS/TEMP] until the administrator looks."""
    if not IS_ROOT:
        print("     (skipped: needs root)")
        return
    add_share_group(env)
    directory = shared_directory(env, "sticky")
    message = ("From a Mon Jan  1 00:00:00 2024\nX-UID: 7\nSubject: s\n\nbody\n\n").encode()
    path = env.write_mailbox(message)
    args = ["--uidl-scheme", "dovecot", "--uidvalidity", directory + "/%u.uidvalidity"]
    out, _ = env.run(login() + "UIDL\r\nQUIT\r\n", args)
    check("+OK maildrop has 1 messages" in out, out)
    planted = f"{directory}/alice.uidvalidity"
    with open(planted, "w") as f:
        f.write("99\n")
    os.chown(planted, BOB_UID, BOB_UID)
    out, _ = env.run(login() + "UIDL\r\nQUIT\r\n", args)
    check("-ERR [SYS/TEMP] UIDVALIDITY file is not the user's own file" in out, out)
    check_equal(open(path, "rb").read(), message, "the mailbox")


def pam_service(env, name, extra_lines=()):
    """A PAM service of pam_matrix, with `extra_lines` first."""
    with open(f"{env.dir}/pam/{name}", "w") as f:
        for line in extra_lines:
            f.write(line + "\n")
        for kind in ("auth", "account", "password", "session"):
            f.write(f"{kind} required {MATRIX} passdb={env.dir}/passdb\n")


def add_account(env, name, uid, password):
    with open(env.dir + "/passwd", "a") as f:
        f.write(f"{name}:x:{uid}:{uid}:{name}:{env.dir}/home/{name}:/bin/sh\n")
    with open(env.dir + "/group", "a") as f:
        f.write(f"{name}:x:{uid}:\n")
    with open(env.dir + "/passdb", "a") as f:
        f.write(f"{name}:{password}:popd\n")
    os.makedirs(f"{env.dir}/home/{name}", exist_ok=True)


class RealAccounts:
    """Real accounts (useradd) for as long as the block runs: nss_wrapper
    keeps an entry per user, so only glibc's own getpwnam(), with its one
    static buffer, shows what a lookup in a PAM module does to a caller's."""

    def __init__(self, env, *names):
        self.env, self.names = env, names

    def __enter__(self):
        import pwd
        for name in self.names:
            subprocess.run(["userdel", name], capture_output=True)
            subprocess.run(["useradd", "--no-create-home", "--home-dir", f"{self.env.dir}/home/{name}",
                            "--shell", "/bin/sh", name], check=True, capture_output=True)
            account = pwd.getpwnam(name)
            os.makedirs(f"{self.env.dir}/home/{name}", exist_ok=True)
            os.chown(f"{self.env.dir}/home/{name}", account.pw_uid, account.pw_gid)
        return [pwd.getpwnam(name) for name in self.names]

    def __exit__(self, *exc):
        for name in self.names:
            subprocess.run(["userdel", name], capture_output=True)


def test_pam_module_looking_up_another_user(env):
    """A PAM session module that calls getpwnam() for another user does not
    turn the session into that user's (with the entry kept across PAM
    calls, the session ran as the other user on the other's mailbox)."""
    if not IS_ROOT:
        print("     (skipped: needs root)")
        return
    with RealAccounts(env, "popd-t-alice", "popd-t-bob") as (alice, bob):
        with open(env.dir + "/passdb", "a") as f:
            f.write("popd-t-alice:secret:popd\npopd-t-bob:bobpw:popd\n")
        pam_service(env, "popd", [f"session required {LOOKUP_MODULE} user=popd-t-bob"])
        _, alice_records = make_mbox(3)
        _, bob_records = make_mbox(5, seed=2)
        mailboxes = {}
        for account, records in ((alice, alice_records), (bob, bob_records)):
            mailboxes[account.pw_name] = env.write_mailbox("".join(records).encode(), user=account.pw_name,
                                                           uid=account.pw_uid)
        variables = {k: v for k, v in env.variables().items() if not k.startswith("NSS_WRAPPER")}
        variables["LD_PRELOAD"] = f"{support.LIB}/libpam_wrapper.so"
        p = subprocess.run(env.command(), input=(login("popd-t-alice") + "STAT\r\nDELE 1\r\nQUIT\r\n").encode(),
                           capture_output=True, env=dict(os.environ, **variables), timeout=30)
        out = p.stdout.decode()
        check("+OK maildrop has 3 messages" in out, f"alice's session did not serve alice's mailbox: {out}")
        check(out.endswith("(1 messages deleted)\r\n"), out[-300:])
        check(open(mailboxes["popd-t-alice"], "rb").read() == "".join(alice_records[1:]).encode(),
              "alice's mailbox after QUIT")
        check(open(mailboxes["popd-t-bob"], "rb").read() == "".join(bob_records).encode(), "bob's mailbox changed")


def test_root_and_system_accounts_refused_before_the_session(env):
    """uid 0 and a uid below UID_MIN are refused right after the lookup,
    with a wrong password's words (a right password is not confirmed), and
    no PAM session step runs for them."""
    if not IS_ROOT:
        print("     (skipped: needs root)")
        return
    marker = env.dir + "/session-opened"
    pam_service(env, "popd", [f"session optional {SECURITY}/pam_exec.so quiet /usr/bin/touch {marker}"])
    add_account(env, "toor", 0, "rootpw")
    add_account(env, "daemonish", 500, "daemonpw")
    env.write_mailbox(b"", user="toor", uid=0)
    env.write_mailbox(b"", user="daemonish", uid=500)
    for user, password in (("toor", "rootpw"), ("daemonish", "daemonpw")):
        out, _ = env.run(login(user, password) + "STAT\r\nQUIT\r\n")
        check("-ERR [AUTH] Authentication failed\r\n" in out, f"{user}: {out}")
        check(not os.path.exists(marker), f"{user}: a PAM session was opened")
    out, _ = env.run(login("daemonish", "daemonpw") + "QUIT\r\n", ["--first-valid-uid", "500"])
    check("+OK maildrop has 0 messages" in out, out)
    check(os.path.exists(marker), "the session step did not run for an allowed account (the test is blind)")
    out, _ = env.run(login("toor", "rootpw") + "QUIT\r\n", ["--first-valid-uid", "1"])
    check("-ERR [AUTH] Authentication failed\r\n" in out, f"root with --first-valid-uid 1: {out}")


def test_expired_account_looks_like_a_wrong_password(env):
    """The right password of an account PAM's account step refuses gets
    the reply a wrong password gets."""
    pam_service(env, "popd", [f"account requisite {SECURITY}/pam_succeed_if.so quiet user notin bob"])
    env.write_mailbox(b"", user="bob")
    expired, _ = env.run(login("bob", "bobpw") + "QUIT\r\n")
    wrong, _ = env.run(login("bob", "wrong") + "QUIT\r\n")
    check_equal(expired.split("\r\n")[2], wrong.split("\r\n")[2], "expired and wrong password replies")
    check_equal(wrong.split("\r\n")[2], "-ERR [AUTH] Authentication failed", "the reply")


def test_encrypted_key_never_prompts(env):
    """An encrypted --tls-key: popd never asks for its passphrase (OpenSSL's
    default prompt writes to standard error and reads standard input, the
    client's socket under inetd); STLS mode answers [SYS/TEMP], implicit
    TLS closes. Run without a terminal, as inetd runs it."""
    key, cert = env.dir + "/encrypted.key", env.dir + "/cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-passout", "pass:sekrit", "-subj",
                    "/CN=localhost", "-days", "2", "-keyout", key, "-out", cert], check=True, capture_output=True)
    for implicit in ([], ["--tls-implicit"]):
        p = subprocess.run(env.command(["--tls-cert", cert, "--tls-key", key] + implicit),
                           input=b"sekrit\nCAPA\r\nQUIT\r\n", capture_output=True, timeout=30, start_new_session=True,
                           env=dict(os.environ, **env.variables()))
        expected = b"" if implicit else b"-ERR [SYS/TEMP] Server configuration error\r\n"
        check_equal(p.stdout, expected, f"reply {implicit}")
        check(b"pass phrase" not in p.stderr, f"a passphrase prompt: {p.stderr!r}")


def key_secrets(key):
    """Byte strings that only a process holding the key has: its first
    prime as stored (big-endian) and as OpenSSL keeps it in memory (64-bit
    limbs, least significant first: the bytes reversed), and a line of the
    PEM file."""
    text = subprocess.run(["openssl", "rsa", "-in", key, "-noout", "-text"], check=True, capture_output=True,
                          text=True).stdout
    hex_digits = "".join(text.split("prime1:")[1].split("prime2:")[0].split()).replace(":", "")
    prime = bytes.fromhex(hex_digits).lstrip(b"\0")
    pem_line = open(key).read().splitlines()[5].encode()
    return {"prime": prime, "prime in memory": prime[::-1], "PEM": pem_line}


def memory_holds(pid, secrets):
    """The names of the secrets found in the process's readable memory, in
    pieces (a sanitizer's shadow mappings are terabytes, and skipped)."""
    found, piece, overlap = set(), 16 << 20, max(len(s) for s in secrets.values())
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
        for line in maps:
            fields = line.split()
            if "r" not in fields[1] or (len(fields) > 5 and fields[5] in ("[vvar]", "[vsyscall]")):
                continue
            start, end = (int(x, 16) for x in fields[0].split("-"))
            if end - start > 1 << 30:
                continue
            for at in range(start, end, piece):
                try:
                    mem.seek(at)
                    data = mem.read(min(piece + overlap, end - at))
                except (OSError, ValueError, OverflowError):
                    break
                found |= {name for name, secret in secrets.items() if secret in data}
    return found


def check_confined(pid):
    """The pre-auth process runs under its seccomp filter and limits."""
    status = open(f"/proc/{pid}/status").read()
    check("Seccomp:\t2" in status, "the pre-auth process has no seccomp filter")
    limits = {}
    for line in open(f"/proc/{pid}/limits").read().splitlines()[1:]:
        name, soft = line[:26].strip(), line[26:47].split()[0]
        limits[name] = soft
    ring = (1 << 20) + os.sysconf("SC_PAGE_SIZE")  # the only file it may fill: the ring's memfd
    check_equal((limits["Max processes"], limits["Max open files"], limits["Max address space"],
                 limits["Max core file size"], limits["Max file size"]), ("0", "16", str(256 << 20), "0", str(ring)),
                "the pre-auth process's limits")


def test_tls_key_only_in_the_pre_auth_process(env):
    """After a TLS login the session process (the user's, which parses
    user-controlled files) and the monitor hold nothing of the private
    key; the pre-auth process, which does the handshake, does (the
    search can find it), and runs under its seccomp filter and limits."""
    if not IS_ROOT:
        print("     (skipped: needs root)")
        return
    import poplib
    from security import client_context, tls_files
    tls = tls_files(env)
    secrets = key_secrets(tls[3])
    messages, records = make_mbox(3)
    env.write_mailbox("".join(records).encode())
    with SocketServer(env, tls + ["--tls-implicit"]) as server:
        pop = poplib.POP3_SSL("127.0.0.1", server.port, context=client_context(), timeout=20)
        pop.user("alice")
        pop.pass_("secret")
        check_equal(pop.stat()[0], 3, "STAT over TLS")
        pids = support.connection_processes(server.process.pid)
        check_equal(sorted(pids), sorted([0, ALICE_UID, support.PRIVSEP_UID]), "popd processes after a TLS login")
        check_equal(memory_holds(pids[ALICE_UID], secrets), set(), "what the session holds of the key")
        check_equal(memory_holds(pids[0], secrets), set(), "what the monitor holds of the key")
        check("prime in memory" in memory_holds(pids[support.PRIVSEP_UID], secrets), "the pre-auth process holds no key (blind test)")
        if "/sanitize/" not in support.POPD:  # not confined under AddressSanitizer (server/sandbox.h)
            check_confined(pids[support.PRIVSEP_UID])
        pop.quit()


class StalledHandOver(SocketServer):
    """popd whose pre-auth process stalls for a minute before it hands the
    connection over (tests/faults/shim.c++, FAULT_STALL_HANDOVER)."""

    def __init__(self, env):
        variables = env.variables
        env.variables = lambda: dict(variables(), LD_PRELOAD=variables()["LD_PRELOAD"] + ":" + SHIM,
                                     FAULT_STALL_HANDOVER="60")
        try:
            super().__init__(env)
        finally:
            env.variables = variables

    def __exit__(self, *exc):
        # The stalled pre-auth processes would sleep on: not into the next test.
        for pid in support.connection_processes(self.process.pid).values():
            os.kill(pid, 9)
        super().__exit__(*exc)


def test_stalled_hand_over_locks_nothing(env):
    """A pre-auth process that never hands the connection over (a bug, or
    an attacker in it) keeps no mailbox locked: the session locks only
    once it has the connection, and gives up after params::handover_wait.
    Both ways of locking: the monitor's dotlock in a root:mail 2775 spool
    directory, and the session's own in a sticky one."""
    if not IS_ROOT:
        print("     (skipped: needs root)")
        return
    for layout in ("debian", "sticky"):
        if layout == "debian":
            os.chown(env.dir + "/mail", 0, support.MAIL_GID)
            os.chmod(env.dir + "/mail", 0o2775)
        else:
            os.chmod(env.dir + "/mail", 0o1777)
        path = env.write_mailbox("".join(make_mbox(3)[1]).encode())
        with StalledHandOver(env) as server:
            client = socket.create_connection(("127.0.0.1", server.port), timeout=20)
            client.sendall(login().encode())
            start = time.monotonic()
            while time.monotonic() - start < 3:
                check(not os.path.exists(path + ".lock"), f"{layout}: a dotlock while the hand-over stalls")
                with open(path, "rb+") as f:
                    try:
                        fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        fcntl.lockf(f, fcntl.LOCK_UN)
                    except OSError:
                        check(False, f"{layout}: an fcntl lock while the hand-over stalls")
                time.sleep(0.2)
            while time.monotonic() - start < 15 and ALICE_UID in support.connection_processes(server.process.pid):
                time.sleep(0.2)
            waited = time.monotonic() - start
            check(ALICE_UID not in support.connection_processes(server.process.pid),
                  f"{layout}: the session still waits after {waited:.1f} s")
            print(f"     {layout}: no lock while the hand-over stalled; the session gave up after {waited:.1f} s")
            client.close()


def test_login_time_limit(env):
    """An unauthenticated client that sends a byte before every idle
    timeout is closed after --login-timeout, and its processes are gone; a
    logged-in session is not held to it."""
    env.write_mailbox(b"")
    with SocketServer(env, ["--login-timeout", "2", "--timeout", "1"]) as server:
        s = socket.create_connection(("127.0.0.1", server.port), timeout=20)
        start, received = time.monotonic(), b""
        while time.monotonic() - start < 10:
            try:
                s.sendall(b"NOOP\r\n")
                s.settimeout(0.3)
                chunk = s.recv(4096)
                if not chunk:
                    break
                received += chunk
            except socket.timeout:
                pass
            except OSError:
                break
        elapsed = time.monotonic() - start
        check(1.5 < elapsed < 6, f"the connection ended after {elapsed:.1f} s")
        check(received.endswith(b"-ERR Login time limit reached, closing connection\r\n"), received[-200:])
        for _ in range(50):
            if not support.connection_processes(server.process.pid):
                break
            time.sleep(0.1)
        check_equal(support.connection_processes(server.process.pid), {}, "popd processes after the login time limit")
        # Logged in, the session outlasts the login limit.
        pop = __import__("poplib").POP3("127.0.0.1", server.port, timeout=20)
        pop.user("alice")
        pop.pass_("secret")
        for _ in range(6):
            time.sleep(0.5)
            pop.noop()
        check_equal(pop.stat()[0], 0, "STAT 3 s after login")
        pop.quit()


def test_monitor_kills_a_pre_auth_process_that_outstays(env):
    """A pre-auth process that does not end the connection at the login
    deadline (stopped here with SIGSTOP) is killed by the monitor
    prelogin_grace later, and the monitor ends."""
    if not IS_ROOT:
        print("     (skipped: needs root)")
        return
    import signal
    env.write_mailbox(b"")
    with SocketServer(env, ["--login-timeout", "1"]) as server:
        s = socket.create_connection(("127.0.0.1", server.port), timeout=20)
        check(s.recv(100).startswith(b"+OK"), "greeting")
        pids = support.connection_processes(server.process.pid)
        os.kill(pids[support.PRIVSEP_UID], signal.SIGSTOP)
        start = time.monotonic()
        while support.connection_processes(server.process.pid) and time.monotonic() - start < 15:
            time.sleep(0.2)
        waited = time.monotonic() - start
        check_equal(support.connection_processes(server.process.pid), {},
                    f"popd processes {waited:.1f} s after the pre-auth process stopped")
        check(waited > 3, f"ended after {waited:.1f} s, before the grace")
        s.close()


def test_slow_pam_is_not_taken_for_a_stuck_pre_auth_process(env):
    """PAM that answers after the login deadline (a slow directory) does
    not make the monitor kill a pre-auth process that behaves: the reply
    reaches the client, then the login time limit does."""
    if not IS_ROOT:
        print("     (skipped: needs root)")
        return
    pam_service(env, "popd", [f"auth optional {SECURITY}/pam_exec.so quiet /bin/sleep 3"])
    env.write_mailbox(b"")
    with SocketServer(env, ["--login-timeout", "1"]) as server:
        s = socket.create_connection(("127.0.0.1", server.port), timeout=20)
        f = s.makefile("rb")
        f.readline()
        s.sendall(login("alice", "wrong").encode())
        check_equal(f.readline(), b"+OK Send your password\r\n", "USER")
        check_equal(f.readline(), b"-ERR [AUTH] Authentication failed\r\n", "the late reply")
        check_equal(f.readline(), b"-ERR Login time limit reached, closing connection\r\n", "then the limit")


def test_monitor_ends_a_session_that_outlives_max_session(env):
    """A session stopped by its user (SIGSTOP is hers to send) does not keep
    the root monitor, the PAM session and the mailbox lock past
    --max-session: the monitor kills it a few seconds later."""
    if not IS_ROOT:
        print("     (skipped: needs root)")
        return
    import signal
    env.write_mailbox("".join(make_mbox(2)[1]).encode())
    with SocketServer(env, ["--max-session", "2"]) as server:
        pop = __import__("poplib").POP3("127.0.0.1", server.port, timeout=20)
        pop.user("alice")
        pop.pass_("secret")
        os.kill(support.connection_processes(server.process.pid)[ALICE_UID], signal.SIGSTOP)
        start = time.monotonic()
        while support.connection_processes(server.process.pid) and time.monotonic() - start < 30:
            time.sleep(0.2)
        waited = time.monotonic() - start
        check_equal(support.connection_processes(server.process.pid), {}, f"popd processes after {waited:.1f} s")
        print(f"     a stopped session was ended {waited:.1f} s after login (--max-session 2)")
    # Its dotlock, if it made one, names a process that is gone.
    out, _ = env.run(login() + "STAT\r\nQUIT\r\n")
    check("+OK maildrop has 2 messages" in out, f"the next session: {out}")


def test_temporary_authentication_failures_count(env):
    """PAM that can say neither yes nor no ([SYS/TEMP]) counts toward the
    failure limit: the third closes the connection."""
    pam_service(env, "popd", [f"auth requisite {SECURITY}/pam_exec.so quiet /bin/false"])
    out, _ = env.run(login() * 4)
    lines = out.split("\r\n")
    for i in (2, 4):
        check_equal(lines[i], "-ERR [SYS/TEMP] Authentication is unavailable, try again later", f"attempt {i // 2}")
    check_equal(lines[6], "-ERR [SYS/TEMP] Authentication is unavailable, try again later; too many failures, "
                          "closing connection", "the third attempt")
    check_equal(lines[7:], [""], "nothing after the third")


def test_no_popd_account_no_tls(env):
    """Without a popd account the pre-login process falls back to nobody,
    but not with TLS (it holds the key there): that is a configuration
    error unless the administrator names nobody."""
    if not IS_ROOT:
        print("     (skipped: needs root)")
        return
    from security import tls_files
    with open(env.dir + "/passwd") as f:
        lines = [l for l in f if not l.startswith("popd:")]
    with open(env.dir + "/passwd", "w") as f:
        f.writelines(lines)
    env.write_mailbox(b"")
    out, _ = env.run(login() + "QUIT\r\n")
    check("+OK maildrop has 0 messages" in out, f"plain, as nobody: {out}")
    out, _ = env.run(login() + "QUIT\r\n", tls_files(env))
    check_equal(out, "-ERR [SYS/TEMP] Server configuration error\r\n", "TLS without a popd account")
    out, _ = env.run(login() + "QUIT\r\n", tls_files(env) + ["--privsep-user", "nobody"])
    check("+OK maildrop has 0 messages" in out, f"TLS with --privsep-user nobody: {out}")


if __name__ == "__main__":
    run_tests([v for k, v in list(globals().items()) if k.startswith("test_")], "hardening", ONLY)
