#!/usr/bin/env python3
"""The index through the real binary: a login trusts it by the spool's
state (device, inode, size, mtime, ctime) without reading the spool, and
checks what it touches; every other change to the spool is seen.

Most tests make the index lie (an entry moved, its checksum made good
again, as only the index's owner could) so that an index that was trusted
shows: a session that should not trust it must answer as a parse of the
spool does.

Usage: tests/system/index.py PATH-TO-POPD [TEST-NAME-SUBSTRING]
"""
import os
import random
import shutil
import struct
import sys
import time

import xxhash

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from support import *  # noqa: E402,F401,F403  (the helpers every test here uses)
from support import ONLY, run_tests  # noqa: E402

# mailbox/mbox/index.c++: a 128-byte header, 72-byte entries, X-UIDL
# values, then an XXH3-128 of all of these.
HEADER, ENTRY, CHECKSUM = 128, 72, 16
COUNT_AT, VALIDITY_AT = 24, 112
RACY = 1 << 33
LISTING = login() + "STAT\r\nLIST\r\nUIDL\r\nQUIT\r\n"
# Older than the racy window (2 s): the index saved now is trusted.
SETTLE = 2.2


class Box:
    """A spool and its index of their own, so that one wait serves all."""

    def __init__(self, env, name, count=8, seed=3):
        self.env, self.path, self.index = env, f"{env.dir}/mail/{name}", f"{env.dir}/home/alice/index-{name}"
        self.records = make_mbox(count, seed=seed)[1]
        self.data = "".join(self.records).encode()
        self.write(self.data)

    def write(self, data, path=None):
        path = path or self.path
        with open(path, "wb") as f:
            f.write(data)
        if IS_ROOT:
            os.chown(path, ALICE_UID, ALICE_UID)
        os.chmod(path, 0o600)

    def args(self, index=True):
        return ["--mailbox", self.path, "--index", self.index if index else self.env.dir + "/nowhere/%u"]

    def run(self, script=LISTING, extra=()):
        return self.env.run(script, args=self.args() + list(extra))[0]

    def parsed(self, script=LISTING):
        out = self.env.run(script, args=self.args(index=False))[0]
        check("+OK maildrop has" in out, out)
        return out

    def lie(self, number=3, shift=7):
        """Moves the boundary between message `number` and the next by
        `shift` bytes in the index, and makes its checksum good again."""
        raw = bytearray(open(self.index, "rb").read())
        count = struct.unpack_from("<Q", raw, COUNT_AT)[0]
        check(count > number, "no entry to move")
        at = HEADER + (number - 1) * ENTRY
        offset, length, size = struct.unpack_from("<QQQ", raw, at)
        struct.pack_into("<QQQ", raw, at, offset, length + shift, size + shift)
        offset, length, size = struct.unpack_from("<QQQ", raw, at + ENTRY)
        struct.pack_into("<QQQ", raw, at + ENTRY, offset + shift, length - shift, size - shift)
        raw[-CHECKSUM:] = xxhash.xxh3_128_digest(bytes(raw[:-CHECKSUM]))
        with open(self.index, "wb") as f:
            f.write(raw)

    def racy(self):
        return bool(struct.unpack_from("<Q", open(self.index, "rb").read(), VALIDITY_AT)[0] & RACY)


def settled(boxes):
    """Each box's index saved by a login, after the spools settled."""
    time.sleep(SETTLE)
    for box in boxes:
        check("+OK maildrop has" in box.run(), "first login")
        check(not box.racy(), "an index saved long after the spool changed is marked racy")


def test_index(env):
    """The index in the user's home gives what a parse of the spool gives,
    through new mail, deletions, damage and a replaced spool; the spool
    itself is never written."""
    messages, records = make_mbox(40, seed=11)
    path = env.write_mailbox("".join(records).encode())
    index = env.dir + "/home/alice/.popd-index"
    listing = login() + "STAT\r\nLIST\r\nUIDL\r\nRETR 1\r\nTOP 40 2\r\nQUIT\r\n"
    no_index = ["--index", env.dir + "/nowhere/%u"]

    def same_as_a_parse(what):
        with_index, _ = env.run(listing)
        without, _ = env.run(listing, args=no_index)
        check("+OK maildrop has" in without, without)
        check_equal(with_index, without, what)

    before = stat_of(path)
    same_as_a_parse("first session")
    check(os.path.exists(index), "no index after a session")
    st = os.stat(index)
    check_equal((st.st_mode & 0o777, st.st_uid), (0o600, ALICE_UID), "index mode and owner")
    same_as_a_parse("unchanged spool")
    check_equal(stat_of(path), before, "spool after sessions that used the index")
    with open(path, "ab") as f:  # new mail, as an MDA appends it
        f.write((from_line(99) + make_message(99, random.Random(1)) + "\n").encode())
    same_as_a_parse("after new mail")
    out, _ = env.run(login() + "DELE 2\r\nDELE 3\r\nDELE 41\r\nQUIT\r\n")
    check(out.endswith("(3 messages deleted)\r\n"), out)
    same_as_a_parse("after a commit")
    with open(index, "r+b") as f:
        f.seek(200)
        f.write(b"damage")
    same_as_a_parse("damaged index")
    os.unlink(path)
    env.write_mailbox("".join(records[5:]).encode())
    same_as_a_parse("spool replaced by another file")


def test_a_lying_index_is_trusted_until_touched(env):
    """An index that matches the spool's state is trusted without reading
    the spool (LIST shows the lie); RETR of the message it lies about ends
    the session with [SYS/TEMP], the index is dropped, and the next login
    parses the spool."""
    box = Box(env, "trusted")
    settled([box])
    box.lie()
    out = box.run()
    check(out != box.parsed(), "the index was not trusted: a login read the spool")
    out = box.run(login() + "RETR 1\r\nRETR 3\r\nRETR 5\r\nQUIT\r\n")
    check("-ERR [SYS/TEMP] Mailbox changed since it was indexed, try again\r\n" in out, out)
    check("RETR 5" not in out and out.count("\r\n.\r\n") == 1, "the session went on after the mismatch: " + out)
    check(not os.path.exists(box.index), "the index was kept")
    check_equal(box.run(), box.parsed(), "the login after the mismatch")
    check_equal(open(box.path, "rb").read(), box.data, "spool")


def test_a_commit_checks_what_it_moves(env):
    """A commit that would move a message the index lies about changes
    nothing; one that moves only what the index has right goes through."""
    box = Box(env, "commit", count=10)
    settled([box])
    before = stat_of(box.path)
    box.lie(number=5)
    out = box.run(login() + "DELE 2\r\nQUIT\r\n")
    check(out.endswith("\r\n") and out.splitlines()[-1].startswith("-ERR [SYS/TEMP]"), out)
    check_equal(stat_of(box.path), before, "spool after a refused commit")
    check_equal(open(box.path, "rb").read(), box.data, "spool bytes after a refused commit")
    check(not os.path.exists(box.index), "the index was kept")
    box.run()  # a fresh index, saved within the racy window: the next commit checks it all anyway
    out = box.run(login() + "DELE 8\r\nQUIT\r\n")
    check(out.endswith("(1 messages deleted)\r\n"), out)
    check_equal(open(box.path, "rb").read(), "".join(box.records[:7] + box.records[8:]).encode(), "spool")


def test_every_change_to_the_spool_is_seen(env):
    """Replaced (new inode, same size and mtime), rewritten in place with
    the same size, touched back to its old mtime, truncated, an index from
    another spool, appended to: none is trusted as it was."""
    names = ("replaced", "rewritten", "touched", "truncated", "foreign", "other", "appended")
    boxes = {name: Box(env, name, seed=len(name)) for name in names}
    settled(boxes.values())
    for name, box in boxes.items():
        if name not in ("other", "appended"):  # "other" lends its own index to "foreign"
            box.lie()
    st = os.stat(boxes["replaced"].path)
    boxes["replaced"].write(boxes["replaced"].data, boxes["replaced"].path + ".new")
    os.rename(boxes["replaced"].path + ".new", boxes["replaced"].path)
    os.utime(boxes["replaced"].path, ns=(st.st_atime_ns, st.st_mtime_ns))
    for name in ("rewritten", "touched"):
        box = boxes[name]
        st = os.stat(box.path)
        with open(box.path, "r+b") as f:  # the same bytes, written again
            f.write(box.data)
        if name == "touched":  # touch -d: the mtime as it was
            os.utime(box.path, ns=(st.st_atime_ns, st.st_mtime_ns))
    with open(boxes["truncated"].path, "r+b") as f:
        f.truncate(len(boxes["truncated"].data) - len(boxes["truncated"].records[-1]))
    shutil.copyfile(boxes["other"].index, boxes["foreign"].index)
    with open(boxes["appended"].path, "ab") as f:
        f.write((from_line(99) + make_message(99, random.Random(5)) + "\n").encode())
    for name, box in boxes.items():
        if name != "other":
            check_equal(box.run(), box.parsed(), f"{name}: the login after the change")
    check("+OK maildrop has 9 " in boxes["appended"].run(), "the appended message")


def test_an_index_saved_within_the_racy_window_is_checked_in_full(env):
    """Saved within 2 s of the spool's change, an index is marked racy: the
    spool may change again within the same timestamp tick, unseen. So is
    every index of a --shared-spool (other hosts' clocks)."""
    box = Box(env, "racy")
    box.run()
    check(box.racy(), "an index saved right after the spool changed is not marked racy")
    box.lie()
    check_equal(box.run(), box.parsed(), "a login with a racy index")
    shared = Box(env, "shared")
    settled([shared])
    shared.lie()
    check_equal(shared.run(extra=["--shared-spool"]), shared.parsed(), "a login to a shared spool")


if __name__ == "__main__":
    run_tests([v for k, v in list(globals().items()) if k.startswith("test_")], "index", ONLY)
