#!/usr/bin/env python3
"""What administrators coming from Dovecot look for (issue 34), through
the real binary: workarounds for legacy clients, LOGIN-DELAY, per-address
connection limits, EXPIRE, and what the log and --explain tell.

Usage: tests/system/policy.py PATH-TO-POPD [TEST-NAME-SUBSTRING]
"""
import os
import sys

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


if __name__ == "__main__":
    run_tests([v for k, v in list(globals().items()) if k.startswith("test_")], "policy", ONLY)
