#!/usr/bin/env python3
"""What administrators coming from Dovecot look for (issue 34), through
the real binary: workarounds for legacy clients, LOGIN-DELAY, per-address
connection limits, EXPIRE, and what the log and --explain tell.

Usage: tests/system/policy.py PATH-TO-POPD [TEST-NAME-SUBSTRING]
"""
import base64
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from support import *  # noqa: E402,F401,F403  (the helpers every test here uses)
from support import ONLY, run_tests  # noqa: E402

LOGIN = "USER alice\r\nPASS secret\r\n"


def test_workaround_outlook_no_nuls(env):
    """A NUL in a message reaches the client as 0x80 with the workaround,
    as it is without; nothing else changes, and the spool keeps its NUL."""
    record = b"From a@example.org Mon Jan  1 00:00:00 2024\nSubject: nul\n\nbefore\0after\n\0\n\n"
    env.write_mailbox(record)
    plain, _ = env.run(LOGIN + "RETR 1\r\nQUIT\r\n")
    fixed, _ = env.run(LOGIN + "RETR 1\r\nQUIT\r\n", args=["--workaround", "outlook-no-nuls"])
    check("before\0after\r\n\0\r\n" in plain, f"without the workaround: {plain!r}")
    check("before\x80after\r\n\x80\r\n" in fixed and "\0" not in fixed, f"with it: {fixed!r}")
    check_equal(plain.replace("\0", "\x80"), fixed, "nothing else differs")
    check_equal(open(env.mailbox(), "rb").read(), record, "the spool")


def test_workaround_oe_ns_eoh(env):
    """A message that is all header gets its empty end line with the
    workaround, in RETR and TOP; a message that has it is sent as before."""
    records = (b"From a@example.org Mon Jan  1 00:00:00 2024\nSubject: only a header\nX-Note: no body\n\n"
               b"From b@example.org Mon Jan  1 00:00:01 2024\nSubject: whole\n\nbody\n\n")
    env.write_mailbox(records)
    script = LOGIN + "RETR 1\r\nTOP 1 0\r\nRETR 2\r\nQUIT\r\n"
    plain, _ = env.run(script)
    fixed, _ = env.run(script, args=["--workaround=oe-ns-eoh,outlook-no-nuls"])
    check("X-Note: no body\r\n.\r\n" in plain, f"without the workaround: {plain!r}")
    check_equal(fixed.count("X-Note: no body\r\n\r\n.\r\n"), 2, f"RETR and TOP with it: {fixed!r}")
    check("Subject: whole\r\n\r\nbody\r\n.\r\n" in fixed, fixed)
    out, status = env.run("QUIT\r\n", args=["--workaround", "outlook"])
    check(status == 2 and out == "", f"an unknown workaround: {status} {out!r}")


def test_login_delay(env):
    """--login-delay 600: CAPA says LOGIN-DELAY 600; a second login at once
    is refused with [LOGIN-DELAY] before the mailbox is read, another
    user's is not; once the time has passed (the record set back, as a
    clock moved on) the user gets in again. A record that is not the
    user's own file does not count."""
    messages, records = make_mbox(3)
    env.write_mailbox("".join(records).encode())
    args = ["--login-delay", "600"]
    capa, _ = env.run("CAPA\r\nQUIT\r\n", args=args)
    check("\r\nLOGIN-DELAY 600\r\n" in capa, capa)
    first, _ = env.run(LOGIN + "STAT\r\nQUIT\r\n", args=args)
    check("+OK 3 " in first, first)
    stamp = env.dir + "/home/alice/.popd-index.last-login"
    check(os.path.exists(stamp), "the record of the login")
    again, _ = env.run(LOGIN + "STAT\r\nQUIT\r\n", args=args)
    check("-ERR [LOGIN-DELAY] " in again and "+OK 3 " not in again, again)
    env.write_mailbox(b"", user="bob")
    bob, _ = env.run("USER bob\r\nPASS bobpw\r\nSTAT\r\nQUIT\r\n", args=args)
    check("+OK 0 0" in bob, f"another user: {bob}")
    without, _ = env.run(LOGIN + "STAT\r\nQUIT\r\n")
    check("+OK 3 " in without, f"without --login-delay: {without}")
    past = os.stat(stamp).st_mtime - 601
    os.utime(stamp, (past, past))
    later, _ = env.run(LOGIN + "STAT\r\nQUIT\r\n", args=args)
    check("+OK 3 " in later, f"600 s later: {later}")
    if IS_ROOT:  # a record another user made there: ignored
        os.unlink(stamp)
        with open(stamp, "w"):
            pass
        os.chown(stamp, BOB_UID, BOB_UID)
        squatted, _ = env.run(LOGIN + "STAT\r\nQUIT\r\n", args=args)
        check("+OK 3 " in squatted, f"with bob's file as the record: {squatted}")


def age_records(path, days):
    """Moves every first-retrieval time in the records back `days`: what
    the clock moving on would do."""
    lines = open(path).read().splitlines(keepends=True)
    check_equal(lines[0], "popd retrieved 1\n", "the records' header")
    with open(path, "w") as f:
        f.write(lines[0] + "".join(f"{int(l.split(' ', 1)[0]) - days * 86400} {l.split(' ', 1)[1]}" for l in lines[1:]))


def test_expire(env):
    """--expire 7: CAPA says EXPIRE 7; RETR records when each message was
    first retrieved beside the index; 6 days on nothing goes, 7 days on
    the retrieved messages go at QUIT, in the commit, and the others stay
    byte for byte; a session without QUIT deletes nothing."""
    messages, records = make_mbox(4, seed=34)
    env.write_mailbox("".join(records).encode())
    args = ["--expire", "7"]
    capa, _ = env.run("CAPA\r\nQUIT\r\n", args=args)
    check("\r\nEXPIRE 7\r\n" in capa and "EXPIRE NEVER" not in capa, capa)
    check("EXPIRE NEVER" in env.run("CAPA\r\nQUIT\r\n")[0], "the default: NEVER")
    out, _ = env.run(LOGIN + "RETR 1\r\nTOP 3 0\r\nRETR 2\r\nQUIT\r\n", args=args)
    check("(0 messages deleted)" in out, out)
    retrieved = env.dir + "/home/alice/.popd-index.retrieved"
    check_equal(len(open(retrieved).read().splitlines()), 3, "two records and the header")
    check_equal(open(env.mailbox(), "rb").read(), "".join(records).encode(), "the spool, untouched")
    age_records(retrieved, 6)
    env.run(LOGIN + "RETR 1\r\nQUIT\r\n", args=args)  # a second retrieval keeps the first's time
    check_equal(open(env.mailbox(), "rb").read(), "".join(records).encode(), "six days on")
    age_records(retrieved, 1)
    out, _ = env.run(LOGIN + "STAT\r\n", args=args)  # no QUIT: no commit
    check("+OK 4 " in out, out)
    check_equal(open(env.mailbox(), "rb").read(), "".join(records).encode(), "seven days on, no QUIT")
    with Syslog() if can_bind_dev_log() else contextlib.nullcontext() as log:
        out, _ = env.run(LOGIN + "STAT\r\nQUIT\r\n", args=args)
        lines = log.collect(until="session end:") if log else []
    check("+OK 4 " in out and "signing off (2 messages deleted)" in out, out)
    check_equal(open(env.mailbox(), "rb").read(), "".join(records[2:]).encode(), "seven days on: 1 and 2 gone")
    if log:  # else no syslog line can be caught here
        check(any("expire: user=alice expired=2" in l for l in lines), "\n".join(lines))
        check(any(" dele=2 kept=2/" in l for l in lines), "dele= counts them with the client's")
    check_equal(open(retrieved).read(), "popd retrieved 1\n", "their records gone too")
    out, _ = env.run(LOGIN + "UIDL\r\nQUIT\r\n", args=args)
    check(out.count("\r\n1 ") == 1 and "\r\n3 " not in out, f"two left: {out}")


def test_expire_maildir(env):
    """The same in a Maildir: expiry works on the store, whatever its format."""
    maildir = env.dir + "/home/alice/Maildir"
    for folder in ("", "/cur", "/new", "/tmp"):
        os.makedirs(maildir + folder, exist_ok=True)
        os.chown(maildir + folder, ALICE_UID, ALICE_GID) if IS_ROOT else None
    for i in range(3):
        path = f"{maildir}/new/{1700000000 + i}.M{i}P1.host"
        with open(path, "w") as f:
            f.write(f"Subject: {i}\n\nbody {i}\n")
        os.chown(path, ALICE_UID, ALICE_GID) if IS_ROOT else None
    args = ["--expire", "0", "--mailbox", "maildir:%h/Maildir"]
    out, _ = env.run(LOGIN + "RETR 2\r\nQUIT\r\n", args=args)  # EXPIRE 0: gone at this QUIT
    check("body 1" in out and "signing off" in out, out)
    check_equal(sorted(os.listdir(maildir + "/new") + os.listdir(maildir + "/cur")),
                ["1700000000.M0P1.host", "1700000002.M2P1.host"], "the retrieved message gone")


def test_explain(env):
    """popd --explain alice: the account, the mailbox and its files, the
    first unique-ids (those UIDL gives), and it changes nothing; an
    unknown user, or a uid below --first-valid-uid, is refused with the
    reason and status 1."""
    messages, records = make_mbox(7, seed=35)
    env.write_mailbox("".join(records).encode())
    uidl, _ = env.run(LOGIN + "UIDL\r\nQUIT\r\n")
    ids = [l for l in uidl.split("\r\n") if l[:1].isdigit()][:5]
    before = {n: os.stat(env.dir + "/home/alice/" + n).st_mtime_ns for n in os.listdir(env.dir + "/home/alice")}
    spool = open(env.mailbox(), "rb").read()
    command = env.command(["--explain", "alice"])
    p = subprocess.run(command, capture_output=True, text=True, timeout=30, env=dict(os.environ, **env.variables()))
    check_equal(p.returncode, 0, p.stderr)
    out = p.stdout
    check(f"account: alice uid {ALICE_UID} gid {ALICE_GID} home {env.dir}/home/alice" in out, out)
    check(f"mailbox: mbox {env.mailbox()}: file, owner " in out, out)
    check(f"index: {env.dir}/home/alice/.popd-index: file" in out, out)
    check("journal: " in out and "absent" in out, out)
    check("unique-ids (popd), the first:\n" + "".join(i + "\n" for i in ids) in out, f"{ids} in {out}")
    check_equal(open(env.mailbox(), "rb").read(), spool, "the spool")
    after = {n: os.stat(env.dir + "/home/alice/" + n).st_mtime_ns for n in os.listdir(env.dir + "/home/alice")}
    check_equal(after, before, "the home's files")
    p = subprocess.run(env.command(["--explain", "nobody-here"]), capture_output=True, text=True, timeout=30,
                       env=dict(os.environ, **env.variables()))
    check(p.returncode == 1 and "refused: no system account nobody-here" in p.stdout, p.stdout)
    p = subprocess.run(env.command(["--explain", "alice", "--first-valid-uid", str(ALICE_UID + 1)]),
                       capture_output=True, text=True, timeout=30, env=dict(os.environ, **env.variables()))
    check(p.returncode == 1 and "refused: uid " in p.stdout and "unique-ids (popd), the first:" in p.stdout,
          f"a uid below --first-valid-uid: {p.returncode} {p.stdout}")


def popd_pids():
    pids = []
    for pid in os.listdir("/proc"):
        try:
            if pid.isdigit() and os.readlink(f"/proc/{pid}/exe") == POPD:
                pids.append(int(pid))
        except OSError:
            continue
    return pids


def test_max_per_ip_behind_haproxy(env):
    """--max-per-ip 3 behind HAProxy (send-proxy-v2): of 20 concurrent
    clients, 10 from each of two addresses, 3 of each get the greeting and
    7 get -ERR [SYS/TEMP] too many connections, though HAProxy's address
    is the same for all; once every process is killed (kill -9), one of
    them mid-session, each address has its 3 slots again."""
    if not IS_ROOT:
        print("     (skipped: needs root)")
        return
    from deploy import haproxy
    env.write_mailbox("".join(make_mbox(2)[1]).encode())

    def connect(port, sources):
        """(source, socket, reader, greeting) of clients connected all at once."""
        clients = [socket.create_connection(("127.0.0.1", port), timeout=20, source_address=(source, 0))
                   for source in sources]
        readers = [c.makefile("rb") for c in clients]
        return [(s, c, r, r.readline().decode()) for s, c, r in zip(sources, clients, readers)]

    def count(clients, source, greeting):
        return sum(1 for s, _, _, g in clients if s == source and g.startswith(greeting))

    sources = ["127.0.0.2", "127.0.0.3"] * 10
    with SocketServer(env, ["--proxy-protocol", "--max-per-ip", "3"]) as popd, haproxy(env, popd.port) as (_, v2):
        clients = connect(v2, sources)
        for source in ("127.0.0.2", "127.0.0.3"):
            got = [g for s, _, _, g in clients if s == source]
            check_equal(count(clients, source, "+OK POP3 server ready"), 3, f"{source}: {got}")
            check_equal(count(clients, source, "-ERR [SYS/TEMP] too many connections"), 7, f"{source}: {got}")
        # One of those let in logs in: a session, killed mid-way below.
        _, client, reader, _ = next(c for c in clients if c[0] == "127.0.0.2" and c[3].startswith("+OK"))
        client.sendall(LOGIN.encode())
        reader.readline()
        check(reader.readline().startswith(b"+OK maildrop has 2"), "a login behind the limit")
        for pid in popd_pids():
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)
        # The clients keep their ends open: only the kill gave the slots back.
        again = connect(v2, sources[:8])
        for source in ("127.0.0.2", "127.0.0.3"):
            check_equal(count(again, source, "+OK POP3 server ready"), 3, f"after kill -9: {again}")
        for _, client, _, _ in clients + again:
            client.close()


def traces(directory):
    """{path: text} of the trace files under `directory`."""
    found = {}
    for root, _, files in os.walk(directory):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                found[os.path.join(root, name)] = f.read().decode("latin-1")
    return found


def sides(trace):
    """What the client sent and what it got, rebuilt from a transcript."""
    sent, got = "", ""
    for line in trace.splitlines(keepends=True)[1:]:  # after the header
        if line.startswith("C: "):
            sent += line[3:]
        elif line.startswith("S: "):
            got += line[3:]
    return sent, got


def test_trace_dir(env):
    """--trace-dir DIR/%u traces the users whose directory exists: each
    session's file holds every byte the client got and every line it sent,
    but the password, PLAIN's response and LOGIN's two are ***; the file is
    root's, mode 0600, even though the session (which appends to it) runs
    as the user. A failed login is traced too; bob, without a directory,
    is not."""
    messages, records = make_mbox(2)
    env.write_mailbox("".join(records).encode())
    env.write_mailbox(b"", user="bob")
    top = env.dir + "/trace"
    os.mkdir(top, 0o700)
    os.mkdir(top + "/alice", 0o700)
    args = ["--trace-dir", top + "/%u"]
    plain = base64.b64encode(b"\0alice\0secret").decode()
    script = (f"CAPA\r\nUSER alice\r\nPASS wrong one\r\nAUTH PLAIN\r\n{plain}\r\n"
              "STAT\r\nRETR 1\r\nTOP 2 1\r\nQUIT\r\n")
    out, _ = env.run(script, args=args)
    check("+OK maildrop has 2" in out, out)
    files = traces(top)
    check_equal(len(files), 1, f"one file: {list(files)}")
    path, trace = next(iter(files.items()))
    check(path.startswith(top + "/alice/alice-") and path.endswith(".trace"), path)
    st = os.stat(path)
    if IS_ROOT:
        check_equal((st.st_uid, st.st_mode & 0o7777), (0, 0o600), "owner and mode")
    check(trace.startswith("# popd trace: user=alice "), trace[:100])
    sent, got = sides(trace)
    check_equal(got, out, "every byte the client got")
    check_equal(sent, "CAPA\r\nUSER alice\r\nPASS ***\r\nAUTH PLAIN\r\n***\r\nSTAT\r\nRETR 1\r\nTOP 2 1\r\n"
                "QUIT\r\n", "what the client sent, redacted")
    for secret in ("secret", "wrong one", plain):
        check(secret not in trace, f"{secret!r} in the trace")
    if can_bind_dev_log():
        with Syslog() as log:
            env.run(LOGIN + "QUIT\r\n", args=args)
            lines = log.collect(until="session end:")
        newest = max(traces(top), key=os.path.getmtime)
        check(any(f"trace: user=alice file={newest}" in l for l in lines), "\n".join(lines))
        os.unlink(newest)

    # AUTH LOGIN, the name as initial response; then a failure alone.
    login = base64.b64encode(b"alice").decode()
    out, _ = env.run(f"AUTH LOGIN {login}\r\n{base64.b64encode(b'secret').decode()}\r\nSTAT\r\nQUIT\r\n", args=args)
    check("+OK 2 " in out, out)
    failed, _ = env.run("USER alice\r\nPASS nope\r\nQUIT\r\n", args=args)
    files = traces(top)
    check_equal(len(files), 3, f"three files: {list(files)}")
    sent = sorted(sides(t)[0] for t in files.values())
    check_equal(sent[0], "AUTH LOGIN ***\r\n***\r\nSTAT\r\nQUIT\r\n", "AUTH LOGIN")
    check_equal(sent[2], "USER alice\r\nPASS ***\r\nQUIT\r\n", "a failed login")
    check(any(sides(t)[1] == failed for t in files.values()), "the failed session's replies")

    out, _ = env.run("USER bob\r\nPASS bobpw\r\nSTAT\r\nQUIT\r\n", args=args)
    check("+OK 0 0" in out, out)
    check_equal(len(traces(top)), 3, "bob, without a directory, untraced")

    # SASL responses a client pipelined after an AUTH that failed reach
    # the engine as commands: still ***, as is a password after a CR.
    before = set(traces(top))
    bad_name = base64.b64encode(b"alice smith").decode()
    env.run(f"AUTH LOGIN\r\n{bad_name}\r\n{base64.b64encode(b'secret').decode()}\r\n"
            "USER alice\r\nPASS sec\rret\r\nQUIT\r\n", args=args)
    trace = next(t for p, t in traces(top).items() if p not in before)
    check_equal(sides(trace)[0], "AUTH LOGIN\r\n***\r\n***\r\nUSER alice\r\nPASS ***\r\nQUIT\r\n", "pipelined")
    check(base64.b64encode(b"secret").decode() not in trace and "ret\r" not in trace, trace)


def test_trace_dir_names_and_users(env):
    """A connection that names two users leaves a file in each one's
    directory, each with the whole login phase; the session's part goes to
    the user who logged in. An empty %d (a name without a domain) is not
    traced in the directory above; a name's odd bytes do not reach the
    file's name."""
    if not IS_ROOT:
        return skip("needs root: bob is refused when popd runs as alice")
    env.write_mailbox(b"")
    top = env.dir + "/trace"
    for d in ("", "/alice", "/bob"):
        os.mkdir(top + d, 0o700)
    script = "USER bob\r\nPASS wrong\r\nUSER alice\r\nPASS secret\r\nSTAT\r\nQUIT\r\n"
    out, _ = env.run(script, args=["--trace-dir", top + "/%u"])
    check("+OK 0 0" in out, out)
    files = traces(top)
    check_equal(sorted(p.split("/")[-2] for p in files), ["alice", "bob"], f"{list(files)}")
    alice = next(t for p, t in files.items() if "/alice/" in p)
    bob = next(t for p, t in files.items() if "/bob/" in p)
    check_equal(sides(alice), (script.replace("PASS wrong", "PASS ***").replace("PASS secret", "PASS ***"), out),
                "alice's file: the whole connection")
    check(sides(bob)[0].endswith("USER alice\r\nPASS ***\r\n") and "STAT" not in bob, bob)
    shutil.rmtree(top)
    os.mkdir(top, 0o700)
    env.run(LOGIN + "QUIT\r\n", args=["--trace-dir", top + "/%d"])
    env.run("USER al$(x)*\r\nPASS x\r\nQUIT\r\n", args=["--trace-dir", top])
    check_equal([os.path.basename(p).split("-")[0] for p in traces(top)], ["al__x__"], "only the fixed template's file")


def test_trace_dir_refuses_what_others_can_change(env):
    """A trace directory another user could change is not used (the
    session goes on untraced); a template without %-sequences is made, and
    holds every user's sessions; a relative one is refused at start."""
    env.write_mailbox(b"")
    top = env.dir + "/trace"
    os.mkdir(top, 0o700)
    os.mkdir(top + "/alice", 0o700)
    os.chmod(top + "/alice", 0o777)
    out, _ = env.run(LOGIN + "STAT\r\nQUIT\r\n", args=["--trace-dir", top + "/%u"])
    check("+OK 0 0" in out, out)
    check_equal(traces(top), {}, "a world-writable directory")
    if IS_ROOT:
        os.chmod(top + "/alice", 0o700)
        os.chown(top + "/alice", BOB_UID, BOB_UID)
        env.run(LOGIN + "QUIT\r\n", args=["--trace-dir", top + "/%u"])
        check_equal(traces(top), {}, "another user's directory")
        os.rmdir(top + "/alice")
        os.symlink(top + "/elsewhere", top + "/alice")
        os.mkdir(top + "/elsewhere", 0o700)
        env.run(LOGIN + "QUIT\r\n", args=["--trace-dir", top + "/%u"])
        check_equal(traces(top), {}, "a symbolic link")
    everyone = top + "/all"
    env.run(LOGIN + "QUIT\r\n", args=["--trace-dir", everyone])
    env.write_mailbox(b"", user="bob")
    env.run("USER bob\r\nPASS bobpw\r\nQUIT\r\n", args=["--trace-dir", everyone])
    check_equal(oct(os.stat(everyone).st_mode & 0o7777), oct(0o700), "made, root's alone")
    check_equal(sorted(os.path.basename(p).split("-")[0] for p in traces(everyone)), ["alice", "bob"], "both")
    out, status = env.run("QUIT\r\n", args=["--trace-dir", "trace/%u"])
    check(status == 2 and out == "", f"a relative directory: {status} {out!r}")


def test_trace_dir_without_root(env):
    """Run as the user (one process, no monitor), the file is the user's
    own, mode 0600, and the transcript the same."""
    if not IS_ROOT:
        return skip("needs root to run as alice")
    env.write_mailbox(b"")
    top = env.dir + "/home/alice/trace"
    os.mkdir(top, 0o700)
    os.chown(top, ALICE_UID, ALICE_GID)
    env.run("CAPA\r\nQUIT\r\n", args=["--trace-dir", top], as_alice=True)
    check_equal(traces(top), {}, "no login attempt: no file, as with root")
    out, _ = env.run("CAPA\r\n" + LOGIN + "STAT\r\nQUIT\r\n", args=["--trace-dir", top], as_alice=True)
    check("+OK 0 0" in out, out)
    files = traces(top)
    check_equal(len(files), 1, f"{list(files)}")
    path, trace = next(iter(files.items()))
    st = os.stat(path)
    check_equal((st.st_uid, st.st_mode & 0o7777), (ALICE_UID, 0o600), "owner and mode")
    check_equal(sides(trace), ("CAPA\r\nUSER alice\r\nPASS ***\r\nSTAT\r\nQUIT\r\n", out), "the transcript")


def test_trace_dir_through_tls(env):
    """poplib over STLS, under systemd-socket-activate: the session's part
    comes through the TLS relay, and the transcript shows the plaintext
    of both sides, the password as ***."""
    import poplib
    from security import client_context, tls_files
    messages, records = make_mbox(3)
    env.write_mailbox("".join(records).encode())
    top = env.dir + "/trace"
    os.mkdir(top, 0o700)
    with SocketServer(env, tls_files(env) + ["--trace-dir", top]) as server:
        pop = poplib.POP3("127.0.0.1", server.port, timeout=20)
        pop.stls(client_context())
        pop.user("alice")
        pop.pass_("secret")
        _, lines, _ = pop.retr(2)
        pop.quit()
    check_equal(b"\r\n".join(lines) + b"\r\n", client_form(messages[1]).encode(), "RETR 2")
    files = traces(top)
    check_equal(len(files), 1, f"{list(files)}")
    trace = next(iter(files.values()))
    sent, got = sides(trace)
    check_equal(sent, "CAPA\r\nSTLS\r\nUSER alice\r\nPASS ***\r\nRETR 2\r\nQUIT\r\n", "what poplib sent")
    check("\r\n.\r\n+OK Begin TLS negotiation\r\n+OK Send your password\r\n" in got, got[:400])
    check(got.endswith("+OK popd signing off (0 messages deleted)\r\n"), got[-200:])
    check(client_form(messages[1]).replace("\r\n.", "\r\n..") in got, "the message, as sent")
    check("secret" not in trace, "the password")


if __name__ == "__main__":
    run_tests([v for k, v in list(globals().items()) if k.startswith("test_")], "policy", ONLY)
