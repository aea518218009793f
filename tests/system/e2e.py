#!/usr/bin/env python3
"""End-to-end tests of the real popd binary: scripted sessions piped into it,
and sessions over a real socket under systemd-socket-activate. Real PAM
through libpam-wrapper's pam_matrix, users through libnss-wrapper, real
files and real locks. Run as root to test the privilege drop as well.

Usage: tests/system/e2e.py PATH-TO-POPD [TEST-NAME-SUBSTRING]
"""
import os
import poplib
import re
import signal
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from support import *  # noqa: E402,F401,F403  (the helpers every test here uses)
from support import ONLY, run_tests  # noqa: E402


def test_command_line(env):
    out = subprocess.run([POPD, "--help"], capture_output=True, text=True)
    check(out.returncode == 0 and "--mailbox" in out.stdout and "--timeout" in out.stdout, "--help")
    out = subprocess.run([POPD, "--version"], capture_output=True, text=True)
    check(out.returncode == 0 and out.stdout.startswith("popd "), "--version")
    for bad in (["--nope"], ["--timeout"], ["--timeout", "0"], ["--timeout", "x"], ["--mailbox", "/a/%x"]):
        out = subprocess.run([POPD] + bad, capture_output=True, text=True)
        check(out.returncode == 2 and "Usage:" in out.stderr and out.stdout == "", f"bad option {bad}")


def test_scripted_session(env, as_alice=False):
    messages, records = make_mbox(3)
    path = env.write_mailbox("".join(records).encode())
    before = stat_of(path)
    out, rc = env.run("CAPA\r\n" + login() + "STAT\r\nLIST\r\nUIDL\r\nRETR 2\r\nTOP 1 0\r\nDELE 2\r\nSTAT\r\nQUIT\r\n",
                      as_alice=as_alice)
    check_equal(rc, 0, "exit status")
    check(out.startswith("+OK POP3 server ready\r\n+OK Capability list follows\r\n"), out)
    sizes = [len(client_form(m)) for m in messages]
    check(f"+OK maildrop has 3 messages ({sum(sizes)} octets)\r\n" in out, out)
    check(f"+OK 3 {sum(sizes)}\r\n" in out, out)
    check(f"+OK scan listing follows\r\n1 {sizes[0]}\r\n2 {sizes[1]}\r\n3 {sizes[2]}\r\n.\r\n" in out, out)
    retr = out.index(f"+OK {sizes[1]} octets\r\n")
    body, _ = multiline(out, retr)
    check_equal(body, client_form(messages[1]), "RETR 2")
    check(f"+OK 2 {sizes[0] + sizes[2]}\r\n" in out, "STAT after DELE")
    check(out.endswith("+OK popd signing off (1 messages deleted)\r\n"), out[-200:])
    check_equal(open(path, "rb").read(), (records[0] + records[2]).encode(), "mailbox after QUIT")
    check_equal(os.stat(path).st_ino, before[0], "inode")


def test_scripted_session_unprivileged(env):
    if not IS_ROOT:
        return test_scripted_session(env)
    test_scripted_session(env, as_alice=True)
    # Not root: only the invoking user may log in.
    env.write_mailbox(b"", user="bob")
    out, _ = env.run(login("bob", "bobpw") + "QUIT\r\n", as_alice=True)
    check("-ERR [SYS/PERM]" in out, out)


def test_retr_is_byte_identical(env):
    messages, records = make_mbox(60, seed=7)
    env.write_mailbox("".join(records).encode())
    script = login() + "".join(f"LIST {i}\r\nRETR {i}\r\n" for i in range(1, 61)) + "QUIT\r\n"
    out, _ = env.run(script)
    at = 0
    for i, message in enumerate(messages, 1):
        listed = out.index(f"+OK {i} ", at)
        size = int(out[listed:out.index("\r\n", listed)].split()[2])
        retr = out.index("+OK", out.index("\r\n", listed))
        body, at = multiline(out, retr)
        check_equal(body, client_form(message), f"message {i}")
        check_equal(size, len(body), f"LIST size of {i}")


def test_delete_commits_exactly(env):
    messages, records = make_mbox(40, seed=3)
    path = env.write_mailbox("".join(records).encode())
    inode = os.stat(path).st_ino
    doomed = [1, 2, 7, 8, 9, 20, 40]
    out, _ = env.run(login() + "".join(f"DELE {i}\r\n" for i in doomed) + "QUIT\r\n")
    check(out.endswith(f"({len(doomed)} messages deleted)\r\n"), out[-200:])
    kept = "".join(r for i, r in enumerate(records, 1) if i not in doomed)
    check_equal(open(path, "rb").read(), kept.encode(), "mailbox after commit")
    check_equal(os.stat(path).st_ino, inode, "inode")
    check(not os.path.exists(env.dir + "/home/alice/.popd-journal"), "journal left behind")
    check(not os.path.exists(path + ".lock"), "dotlock left behind")
    # Unique-ids of the survivors did not change.
    out2, _ = env.run(login() + "UIDL\r\nQUIT\r\n")
    env.write_mailbox("".join(records).encode())
    out1, _ = env.run(login() + "UIDL\r\nQUIT\r\n")
    ids_before = [l.split()[1] for l in multiline(out1, out1.index("+OK unique-id"))[0].splitlines()]
    ids_after = [l.split()[1] for l in multiline(out2, out2.index("+OK unique-id"))[0].splitlines()]
    check_equal(ids_after, [u for i, u in enumerate(ids_before, 1) if i not in doomed], "UIDs after deletion")
    check_equal(len(set(ids_before)), 40, "UIDs unique")


def test_delete_all(env):
    messages, records = make_mbox(5)
    path = env.write_mailbox("".join(records).encode())
    out, _ = env.run(login() + "".join(f"DELE {i}\r\n" for i in range(1, 6)) + "QUIT\r\n")
    check(out.endswith("(5 messages deleted)\r\n"), out)
    check_equal(os.path.getsize(path), 0, "size after deleting all")


def test_nothing_changes_without_quit(env):
    messages, records = make_mbox(5)
    path = env.write_mailbox("".join(records).encode())
    before = stat_of(path)
    time.sleep(0.01)
    out, _ = env.run(login() + "RETR 1\r\nDELE 1\r\nDELE 2\r\n")  # then the connection closes
    check("+OK message 2 deleted" in out, out)
    check_equal(stat_of(path), before, "mailbox after a dropped connection")
    check(not os.path.exists(path + ".lock"), "dotlock left behind")
    # A session without DELE leaves the spool byte-identical, Status headers and all.
    out, _ = env.run(login() + "STAT\r\nLIST\r\nUIDL\r\nRETR 3\r\nTOP 2 3\r\nQUIT\r\n")
    check(out.endswith("(0 messages deleted)\r\n"), out)
    check_equal(stat_of(path), before, "mailbox after a read-only session")


def test_idle_timeout(env):
    messages, records = make_mbox(2)
    path = env.write_mailbox("".join(records).encode())
    before = stat_of(path)
    p = subprocess.Popen(env.command(["--timeout", "1"]), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         env=dict(os.environ, **env.variables()))
    p.stdin.write((login() + "DELE 1\r\n").encode())
    p.stdin.flush()
    start = time.time()
    out = p.stdout.read().decode()
    p.wait(timeout=10)
    check(time.time() - start < 8, "timeout took too long")
    check(out.endswith("-ERR Idle timeout, closing connection\r\n"), out)
    p.stdin.close()
    check_equal(stat_of(path), before, "mailbox after timeout")
    check(not os.path.exists(path + ".lock"), "dotlock left behind")


def test_termination_signal(env):
    """SIGTERM to the session's process group (as systemd stops a unit):
    nothing is committed, both locks are released, the processes exit."""
    messages, records = make_mbox(3)
    path = env.write_mailbox("".join(records).encode())
    before = stat_of(path)
    p = subprocess.Popen(env.command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         env=dict(os.environ, **env.variables()), start_new_session=True)
    p.stdin.write((login() + "DELE 1\r\n").encode())
    p.stdin.flush()
    for _ in range(4):
        p.stdout.readline()
    check(os.path.exists(path + ".lock"), "no dotlock during the session")
    os.killpg(p.pid, signal.SIGTERM)
    p.wait(timeout=10)
    check_equal(stat_of(path), before, "mailbox after SIGTERM")
    check(not os.path.exists(path + ".lock"), "dotlock left behind after SIGTERM")


def test_failed_logins(env):
    env.write_mailbox(b"")
    start = time.time()
    out, _ = env.run(login("alice", "wrong") + login("nobody", "secret") + login("alice", "bad") + login() + "STAT\r\n")
    elapsed = time.time() - start
    lines = out.split("\r\n")
    check_equal(lines[2], "-ERR [AUTH] Authentication failed", "wrong password")
    check_equal(lines[4], "-ERR [AUTH] Authentication failed", "unknown user gets the same reply")
    check(lines[6].startswith("-ERR [AUTH] Authentication failed; too many failures"), out)
    check_equal(lines[7:], [""], "connection closed after 3 failures")
    check(elapsed >= 0.3, "failures are delayed")
    # The default delay is about two seconds.
    p = subprocess.run([POPD, "--mailbox", env.dir + "/mail/%u"], input=login("alice", "wrong").encode(),
                       capture_output=True, env=dict(os.environ, **env.variables()))
    start = time.time()
    p = subprocess.run([POPD, "--mailbox", env.dir + "/mail/%u"], input=login("alice", "wrong").encode(),
                       capture_output=True, env=dict(os.environ, **env.variables()))
    check(1.5 <= time.time() - start < 5, "default delay")
    # An account PAM refuses (pam_acct_mgmt) gets a wrong password's reply:
    # the reply does not confirm the password.
    out, _ = env.run(login("carol", "carolpw"))
    check_equal(out.split("\r\n")[2], "-ERR [AUTH] Authentication failed", "an account PAM refuses")


def test_missing_mailbox_is_empty(env):
    out, _ = env.run(login() + "STAT\r\nLIST\r\nQUIT\r\n")
    check("+OK maildrop has 0 messages (0 octets)\r\n+OK 0 0\r\n+OK scan listing follows\r\n.\r\n" in out, out)
    check(not os.path.exists(env.mailbox()), "popd created the mailbox")


def test_refused_mailboxes(env):
    target = env.dir + "/target"
    open(target, "w").write(from_line(1) + "\nx\n")
    os.symlink(target, env.mailbox())
    out, _ = env.run(login() + "STAT\r\n")
    check("-ERR [SYS/PERM] Mailbox is a symbolic link" in out, out)
    check(not out.endswith("+OK 1"), out)
    os.unlink(env.mailbox())
    os.mkdir(env.mailbox())
    out, _ = env.run(login() + "STAT\r\n")
    check("-ERR [SYS/PERM]" in out, out)
    os.rmdir(env.mailbox())
    os.mkfifo(env.mailbox(), 0o600)
    if IS_ROOT:
        os.chown(env.mailbox(), ALICE_UID, ALICE_GID)
    out, _ = env.run(login() + "STAT\r\n", timeout=20)
    check("-ERR [SYS/PERM] Mailbox is not a regular file" in out, out)
    os.unlink(env.mailbox())
    env.write_mailbox(b"not an mbox\n")
    out, _ = env.run(login() + "STAT\r\n")
    check("-ERR [SYS/PERM] Mailbox is not in mbox format" in out, out)
    if IS_ROOT:
        env.write_mailbox((from_line(1) + "\nx\n").encode(), uid=BOB_UID)
        out, _ = env.run(login() + "STAT\r\n")
        check("-ERR [SYS/PERM] Mailbox is not accessible" in out, out)
        os.chmod(env.mailbox(), 0o666)  # open to alice, but not hers
        out, _ = env.run(login() + "STAT\r\n")
        check("-ERR [SYS/PERM] Mailbox is not owned by the user" in out, out)


def test_lock_contention(env):
    messages, records = make_mbox(3)
    path = env.write_mailbox("".join(records).encode())
    before = stat_of(path)
    # A dotlock held by a live process.
    with open(path + ".lock", "w") as f:
        f.write(f"{os.getpid()}\n")
    start = time.time()
    out, _ = env.run(login() + "DELE 1\r\nQUIT\r\n")
    check("-ERR [IN-USE]" in out, out)
    check(time.time() - start < 10, "gave up in a few seconds")
    check_equal(stat_of(path), before, "mailbox untouched")
    check(os.path.exists(path + ".lock"), "someone else's dotlock removed")
    os.unlink(path + ".lock")
    # An fcntl lock held by another process (as procmail and postfix take).
    holder = subprocess.Popen([sys.executable, "-c",
                               "import fcntl,sys,time\nf=open(sys.argv[1],'r+')\n"
                               "fcntl.lockf(f, fcntl.LOCK_EX)\nprint('locked',flush=True)\ntime.sleep(30)", path],
                              stdout=subprocess.PIPE)
    holder.stdout.readline()
    try:
        out, _ = env.run(login() + "DELE 1\r\nQUIT\r\n")
        check("-ERR [IN-USE]" in out, out)
        check(not os.path.exists(path + ".lock"), "dotlock left behind after fcntl failure")
    finally:
        holder.kill()
        holder.wait()
    check_equal(stat_of(path), before, "mailbox untouched")
    # A flock() lock (Dovecot's LDA with mbox_write_locks = flock takes only
    # that; on Linux it is apart from fcntl locks).
    holder = subprocess.Popen([sys.executable, "-c",
                               "import fcntl,sys,time\nf=open(sys.argv[1],'r+')\n"
                               "fcntl.flock(f, fcntl.LOCK_EX)\nprint('locked',flush=True)\ntime.sleep(30)", path],
                              stdout=subprocess.PIPE)
    holder.stdout.readline()
    try:
        out, _ = env.run(login() + "DELE 1\r\nQUIT\r\n")
        check("-ERR [IN-USE]" in out, f"a flock holder: {out}")
    finally:
        holder.kill()
        holder.wait()
    check_equal(stat_of(path), before, "mailbox untouched")
    # A stale dotlock (its process is gone) is taken over.
    dead = subprocess.Popen(["true"])
    dead.wait()
    with open(path + ".lock", "w") as f:
        f.write(f"{dead.pid}\n")
    if IS_ROOT:  # as if left by alice's own crashed session (the directory is sticky)
        os.chown(path + ".lock", ALICE_UID, ALICE_GID)
    out, _ = env.run(login() + "STAT\r\nQUIT\r\n")
    check("+OK 3 " in out, out)
    # While a session runs, the lock is held: a second session waits, then IN-USE.
    first = subprocess.Popen(env.command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             env=dict(os.environ, **env.variables()))
    first.stdin.write(login().encode())
    first.stdin.flush()
    first.stdout.readline(), first.stdout.readline(), first.stdout.readline()
    check(os.path.exists(path + ".lock"), "dotlock during the session")
    out, _ = env.run(login() + "DELE 1\r\nQUIT\r\n")
    check("-ERR [IN-USE]" in out, out)
    flock = subprocess.run([sys.executable, "-c", "import fcntl,sys\nf=open(sys.argv[1],'r+')\n"
                            "fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)", path], capture_output=True)
    check(flock.returncode != 0, "an agent that takes only flock() got the mailbox during a session")
    first.stdin.write(b"QUIT\r\n")
    first.stdin.close()
    first.wait(timeout=10)
    check(not os.path.exists(path + ".lock"), "dotlock released at QUIT")


def test_debian_spool(env):
    """/var/mail as Debian has it (root:mail 2775): the session, running as the
    user without the mail group, locks through liblockfile's setgid helper."""
    if not IS_ROOT:
        print("     (skipped: needs root)")
        return
    env.cleanup()
    env.__init__(debian_spool=True)
    messages, records = make_mbox(4)
    path = env.write_mailbox("".join(records).encode())
    os.chown(path, ALICE_UID, MAIL_GID)  # as MDAs create spools
    check_equal(os.stat(env.dir + "/mail").st_mode & 0o7777, 0o2775, "spool directory mode")
    p = subprocess.Popen(env.command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         env=dict(os.environ, **env.variables()))
    p.stdin.write((login() + "STAT\r\n").encode())
    p.stdin.flush()
    for _ in range(4):
        p.stdout.readline()
    check(os.path.exists(path + ".lock"), "no dotlock during the session")
    check_session_processes(env, os.getpid())
    # The monitor took it, as the helper would have: alice's file in the
    # mail group, naming the monitor (root), which outlives the session.
    lock = os.stat(path + ".lock")
    check_equal((lock.st_uid, lock.st_gid), (ALICE_UID, MAIL_GID), "dotlock owner and group")
    holder = int(open(path + ".lock").read().split()[0])
    check_equal(os.readlink(f"/proc/{holder}/exe"), POPD, "the dotlock's process")
    check_equal(open(f"/proc/{holder}/status").read().split("Uid:")[1].split()[0], "0", "the dotlock's process uid")
    p.stdin.write(b"DELE 1\r\nQUIT\r\n")
    p.stdin.close()
    out = p.stdout.read().decode()
    p.wait(timeout=10)
    check(out.endswith("(1 messages deleted)\r\n"), out)
    check(not os.path.exists(path + ".lock"), "dotlock left behind")
    check_equal(open(path, "rb").read(), "".join(records[1:]).encode(), "mailbox after QUIT")
    # A stale lock left in the spool by a crashed session is taken over.
    dead = subprocess.Popen(["true"])
    dead.wait()
    with open(path + ".lock", "w") as f:
        f.write(f"{dead.pid}\n")
    os.chown(path + ".lock", ALICE_UID, MAIL_GID)
    out, _ = env.run(login() + "STAT\r\nQUIT\r\n")
    check("+OK 3 " in out, out)
    check(not os.path.exists(path + ".lock"), "stale dotlock left behind")
    # A live process's lock is waited for, then refused, and left alone.
    with open(path + ".lock", "w") as f:
        f.write(f"{os.getpid()}\n")
    os.chown(path + ".lock", ALICE_UID, MAIL_GID)
    before = stat_of(path)
    out, _ = env.run(login() + "DELE 1\r\nQUIT\r\n")
    check("-ERR [IN-USE]" in out, out)
    check(os.path.exists(path + ".lock"), "someone else's dotlock removed")
    os.unlink(path + ".lock")
    # A session killed outright: the monitor removes the lock; nothing is committed.
    p = subprocess.Popen(env.command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         env=dict(os.environ, **env.variables()))
    p.stdin.write((login() + "DELE 1\r\n").encode())
    p.stdin.flush()
    for _ in range(4):
        p.stdout.readline()
    os.kill(popd_pid_of_uid(ALICE_UID), signal.SIGKILL)
    p.stdout.read()
    p.wait(timeout=10)
    check(not os.path.exists(path + ".lock"), "dotlock left behind by a killed session")
    check_equal(stat_of(path), before, "mailbox after the session was killed")
    out, _ = env.run(login() + "STAT\r\nQUIT\r\n")
    check("+OK 3 " in out, out)


def test_debian_spool_without_mailbox(env):
    """A new account on a root:mail 2775 spool: no mail has come, so there
    is no spool file. Login gives an empty maildrop; popd creates nothing,
    and a later delivery works as usual."""
    if not IS_ROOT:
        print("     (skipped: needs root)")
        return
    env.cleanup()
    env.__init__(debian_spool=True)
    path = env.mailbox()
    out, _ = env.run(login() + "STAT\r\nLIST\r\nUIDL\r\nQUIT\r\n")
    check("+OK maildrop has 0 messages (0 octets)\r\n+OK 0 0\r\n+OK scan listing follows\r\n.\r\n" in out, out)
    check(out.endswith("+OK popd signing off (0 messages deleted)\r\n"), out)
    check_equal(os.listdir(env.dir + "/mail"), [], "files left in the spool directory")
    # procmail delivers, with its dotlock, as root; the new spool gets the
    # owner, group and mode Debian's MDAs give it (user:mail 0660).
    rc = env.dir + "/procmailrc"
    with open(rc, "w") as f:
        f.write(f":0:\n{path}\n")
    subprocess.run(["procmail", "-m", rc], input=(from_line(1) + "Subject: first\n\nhello\n").encode(), check=True)
    os.chown(path, ALICE_UID, MAIL_GID)
    os.chmod(path, 0o660)
    out, _ = env.run(login() + "STAT\r\nRETR 1\r\nDELE 1\r\nQUIT\r\n")
    check("+OK maildrop has 1 messages" in out and "Subject: first\r\n\r\nhello\r\n.\r\n" in out, out)
    check(out.endswith("(1 messages deleted)\r\n"), out)
    check_equal(open(path, "rb").read(), b"", "spool after deleting the delivered message")


def test_long_lines_and_junk(env):
    messages, records = make_mbox(2)
    env.write_mailbox("".join(records).encode())
    out, _ = env.run("NOOP " + "x" * 5000 + "\r\n" + login() + "STAT\r\nFOO\r\nRETR 0\r\nRETR 3\r\nRETR 99999999999999999999\r\nQUIT\r\n")
    lines = out.split("\r\n")
    check_equal(lines[1], "-ERR Command line too long")
    check(lines[4].startswith("+OK 2 "), out)
    check(all(l.startswith("-ERR") for l in lines[5:9]), out)
    check(lines[9].startswith("+OK"), out)


def test_crlf_and_special_spools(env):
    # A CRLF spool, a last message without a newline, the UW IMAP pseudo-message.
    data = ("From MAILER-DAEMON Mon Jan  1 00:00:00 2024\r\nSubject: DON'T DELETE THIS MESSAGE -- FOLDER INTERNAL DATA\r\n"
            "X-IMAP: 1 2\r\n\r\ninternal\r\n\r\n"
            "From a Mon Jan  1 00:00:00 2024\r\nSubject: one\r\nX-UID: 3\r\n\r\n.body\r\n\r\n"
            "From b Mon Jan  1 00:00:00 2024\r\nSubject: two\r\n\r\nno newline")
    path = env.write_mailbox(data.encode())
    out, _ = env.run(login() + "LIST\r\nRETR 1\r\nRETR 2\r\nDELE 1\r\nDELE 2\r\nQUIT\r\n")
    check("+OK maildrop has 2 messages" in out, out)
    check("+OK 23 octets\r\nSubject: one\r\n\r\n..body\r\n.\r\n" in out, out)
    check("+OK 28 octets\r\nSubject: two\r\n\r\nno newline\r\n.\r\n" in out, out)
    check_equal(open(path, "rb").read(), data[:data.index("From a")].encode(), "pseudo-message kept")


def test_socket_activation(env):
    messages, records = make_mbox(4, seed=11)
    path = env.write_mailbox("".join(records).encode())
    inode = os.stat(path).st_ino
    with SocketServer(env) as server:
        port = server.port
        pop = poplib.POP3("127.0.0.1", port, timeout=20)
        check(pop.getwelcome().startswith(b"+OK"), "welcome")
        if IS_ROOT:
            check_pre_auth_processes(env, server.process.pid)
        caps = pop.capa()
        for cap in ("USER", "TOP", "UIDL", "PIPELINING", "RESP-CODES", "AUTH-RESP-CODE"):
            check(cap in caps, f"CAPA {cap}")
        pop.user("alice")
        pop.pass_("secret")
        if IS_ROOT:
            check_session_processes(env, server.process.pid)
        count, size = pop.stat()
        check_equal(count, 4, "STAT count")
        check_equal(size, sum(len(client_form(m)) for m in messages), "STAT size")
        _, listing, _ = pop.list()
        check_equal(len(listing), 4, "LIST")
        _, uids, _ = pop.uidl()
        check_equal(len(set(u.split()[1] for u in uids)), 4, "UIDL")
        for i, m in enumerate(messages, 1):
            _, lines, octets = pop.retr(i)
            # poplib strips CRLF and undoes byte-stuffing
            check_equal(b"".join(l + b"\r\n" for l in lines), client_form(m).encode(), f"RETR {i}")
        pop.dele(1)
        pop.dele(3)
        check(pop.quit().startswith(b"+OK"), "QUIT")
        check_equal(open(path, "rb").read(), (records[1] + records[3]).encode(), "after QUIT")
        check_equal(os.stat(path).st_ino, inode, "inode")
        # A dropped connection commits nothing.
        pop = poplib.POP3("127.0.0.1", port, timeout=20)
        pop.user("alice")
        pop.pass_("secret")
        pop.dele(1)
        pop.sock.shutdown(socket.SHUT_RDWR)
        pop.close()
        for _ in range(50):
            if not os.path.exists(path + ".lock"):
                break
            time.sleep(0.1)
        check_equal(open(path, "rb").read(), (records[1] + records[3]).encode(), "after a dropped connection")
        check(not os.path.exists(path + ".lock"), "dotlock after a dropped connection")


def test_syslog(env):
    """Login successes and failures and session ends reach syslog (facility mail), never a password."""
    if not can_bind_dev_log():
        print("     (skipped: needs root and no syslog daemon owning /dev/log)")
        return
    with Syslog() as log:
        messages, records = make_mbox(3)
        path = env.write_mailbox("".join(records).encode())
        dead = subprocess.Popen(["true"])
        dead.wait()
        with open(path + ".lock", "w") as f:  # left by a crashed session
            f.write(f"{dead.pid}\n")
        os.chown(path + ".lock", ALICE_UID, ALICE_GID)
        env.run(login("alice", "wrongpassword") + login() + "RETR 1\r\nDELE 2\r\nQUIT\r\n")
        env.run(login() + "QUIT\r\n")  # the same listing: the same hash, no id new
        lines = log.collect(until=" dele=0 ")
    text = "\n".join(lines)
    mail_facility = [l for l in lines if l.startswith("<2")]  # LOG_MAIL is 2 << 3: <16>..<23>
    check(len(mail_facility) == len(lines) and lines, text)
    check("login failed: user=alice rhost=local reason=" in text, text)
    check("login: user=alice rhost=local" in text, text)
    check(f"took over the stale lock {path}.lock" in text, text)
    size = len(client_form(messages[0]))
    kept = len(client_form(messages[0])) + len(client_form(messages[2]))
    first = re.search(rf"session end: user=alice rhost=local tls=no auth=user retr=1/{size} top=0 dele=1 "
                      rf"kept=2/{kept} duration=\d+\.\d{{3}} result=quit uidl=([0-9a-f]{{8}})/-$", text, re.M)
    check(first, text)
    check(re.search(rf"session end: user=alice .* dele=0 kept=2/{kept} .* result=quit uidl={first[1]}/0$",
                    text, re.M), text)
    check("wrongpassword" not in text and "secret" not in text, "a password reached syslog")


if __name__ == "__main__":
    run_tests([v for k, v in list(globals().items()) if k.startswith("test_")], "e2e", ONLY)
