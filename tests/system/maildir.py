#!/usr/bin/env python3
"""Maildir through the real binary: what it serves, what it never changes,
how QUIT's deletions survive a crash (the fault-injection shim kills popd
at every point of the commit and of the recovery), and what renames and
deliveries during sessions do.

Usage: tests/system/maildir.py PATH-TO-POPD PATH-TO-LIBFAULTS [TEST-NAME-SUBSTRING]
"""
import os
import random
import shutil
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
if __name__ == "__main__":  # else imported for its helpers (maildir_peers.py)
    SHIM = os.path.abspath(sys.argv[2])
    CHOSEN = sys.argv[3] if len(sys.argv) > 3 else ""
    sys.argv = sys.argv[:2]
from support import *  # noqa: E402,F401,F403  (the helpers every test here uses)
from support import run_tests  # noqa: E402

ARGS = ["--mailbox", "%h/Maildir/"]


class Maildir:
    """~alice/Maildir, filled as an MDA fills it: a file in tmp/, renamed
    into new/."""

    def __init__(self, env):
        self.env, self.path = env, env.dir + "/home/alice/Maildir"
        self.serial = 0
        for folder in ("cur", "new", "tmp"):
            os.makedirs(f"{self.path}/{folder}", exist_ok=True)
        self.own(self.path, *(f"{self.path}/{f}" for f in ("cur", "new", "tmp")))

    def own(self, *paths):
        for path in paths:
            if IS_ROOT:
                os.lchown(path, ALICE_UID, ALICE_GID)

    def deliver(self, data, sized=True, folder="new", flags=""):
        """Returns the file's name. `sized`: the name carries ,S= and ,W=,
        as Dovecot's LDA writes them."""
        self.serial += 1
        name = f"{1700000000 + self.serial}.M{self.serial}P{os.getpid()}.host"
        if sized:
            name += f",S={len(data)},W={listed_size(data)}"
        if folder == "cur":
            name += ":2," + flags
        with open(f"{self.path}/tmp/{name}", "wb") as f:
            f.write(data)
        self.own(f"{self.path}/tmp/{name}")
        os.rename(f"{self.path}/tmp/{name}", f"{self.path}/{folder}/{name}")
        return name

    def names(self):
        """The messages: what Maildir readers list (not hidden files)."""
        return {f"{folder}/{n}" for folder in ("new", "cur") for n in os.listdir(f"{self.path}/{folder}")
                if not n.startswith(".")}

    def bases(self):
        return sorted(n.split("/", 1)[1].split(":")[0] for n in self.names())

    def snapshot(self):
        """Every name in the Maildir with its inode, size and times."""
        found = {}
        for root, dirs, files in os.walk(self.path):
            for n in dirs + files + ["."]:
                st = os.lstat(os.path.join(root, n))
                found[os.path.relpath(os.path.join(root, n), self.path)] = (st.st_ino, st.st_size, st.st_mtime_ns,
                                                                             st.st_ctime_ns)
        return found

    def run(self, script, args=(), **kw):
        return self.env.run(script, args=ARGS + list(args), **kw)[0]


def wire(data):
    """What RETR sends of a file, before byte-stuffing: CRLF line ends."""
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return b"".join((line[:-1] if line.endswith(b"\r") else line) + b"\r\n" for line in lines)


def listed_size(data):
    """LIST's size of a file: RETR's octets, less the CRLF sent after a last
    line without LF (Dovecot's size, as it writes it into names)."""
    return len(wire(data)) - (0 if data.endswith(b"\n") or not data else 2)


def replies(out):
    """The multi-line replies of a transcript as (status line, body de-stuffed), in order."""
    found, lines, i = [], out.split("\r\n"), 0
    while i < len(lines):
        multiline = "follows" in lines[i] or (lines[i].endswith(" octets") and "maildrop" not in lines[i])
        if lines[i].startswith("+OK") and multiline:
            status, body, i = lines[i], [], i + 1
            while lines[i] != ".":
                body.append(lines[i][1:] if lines[i].startswith(".") else lines[i])
                i += 1
            found.append((status, "".join(line + "\r\n" for line in body)))
        i += 1
    return found


MESSAGES = [
    b"Subject: plain\nFrom: a@example.org\n\nhello\n.a dot\n..two dots\n.\nbye\n",
    b"Subject: crlf\r\nFrom: a@example.org\r\n\r\nwindows\r\nline ends\r\n",
    b"Subject: no last newline\n\nthe end",
    b"Subject: mixed\n\nlf\ncrlf\r\nbare\rcr inside\n",
    b"From quoted@example.org and >From lines stay as they are\nSubject: x\n\n>From me\nFrom you\n",
]


def test_serves_each_file_byte_for_byte(env):
    """RETR sends each file with CRLF line ends, nothing added, hidden or
    unquoted; LIST gives the octets RETR sends, from ,W= or counted; TOP;
    UIDL gives the base names."""
    box = Maildir(env)
    names = [box.deliver(m, sized=i % 2 == 0, folder="cur" if i == 3 else "new", flags="S")
             for i, m in enumerate(MESSAGES)]
    script = login() + "LIST\r\nUIDL\r\n" + "".join(f"RETR {i}\r\n" for i in range(1, 6)) + "TOP 1 1\r\nQUIT\r\n"
    out = box.run(script)
    got = replies(out)
    listing = got[0][1].split("\r\n")[:-1]
    for i, m in enumerate(MESSAGES):
        status, body = got[2 + i]
        check_equal(body.encode("latin-1"), wire(m), f"RETR {i + 1}")
        check_equal(status, f"+OK {listed_size(m)} octets", f"RETR {i + 1} status")
        check_equal(listing[i], f"{i + 1} {listed_size(m)}", f"LIST {i + 1}")
    check_equal(got[1][1], "".join(f"{i + 1} {n.split(':')[0]}\r\n" for i, n in enumerate(names)), "UIDL")
    check_equal(got[7][1], "Subject: plain\r\nFrom: a@example.org\r\n\r\nhello\r\n", "TOP 1 1")


def test_a_read_only_session_changes_nothing(env):
    """No rename, no new file, no time moved in the Maildir; the sizes popd
    counted go to its --index file in the home, where the next login
    finds them."""
    box = Maildir(env)
    for i, m in enumerate(MESSAGES):
        box.deliver(m, sized=False, folder="cur" if i % 2 else "new")
    before = box.snapshot()
    time.sleep(0.01)
    first = box.run(login() + "STAT\r\nLIST\r\nUIDL\r\nRETR 1\r\nTOP 2 0\r\nQUIT\r\n")
    check(first.endswith("(0 messages deleted)\r\n"), first)
    check_equal(box.snapshot(), before, "the Maildir after a read-only session")
    check(os.path.exists(env.dir + "/home/alice/.popd-index"), "no sizes file after counting")
    # A message file is never rewritten: once counted, its size comes from
    # the sizes file, so a change behind popd's back does not show.
    for name in box.names():
        with open(f"{box.path}/{name}", "ab") as f:
            f.write(b"more\n")
    again = box.run(login() + "LIST\r\nQUIT\r\n")
    check_equal(again.split("+OK scan listing follows\r\n")[1].split(".\r\n")[0],
                first.split("+OK scan listing follows\r\n")[1].split(".\r\n")[0], "LIST from the sizes file")


def test_mark_seen(env):
    """--maildir-mark-seen: at QUIT, what RETR sent moves to cur/ with the
    S flag among its flags in order; what TOP sent, what was deleted and
    what is seen already stay as they are; the ids and the order do not
    change; a session that ends without QUIT renames nothing."""
    box = Maildir(env)
    names = [box.deliver(MESSAGES[0]), box.deliver(MESSAGES[1], folder="cur", flags="FT"),
             box.deliver(MESSAGES[2], folder="cur", flags="RS"), box.deliver(MESSAGES[3]),
             box.deliver(MESSAGES[4])]
    ids = box.run(login() + "UIDL\r\nQUIT\r\n", ["--maildir-mark-seen"])
    before = box.snapshot()
    dropped = box.run(login() + "RETR 1\r\nRETR 2\r\n", ["--maildir-mark-seen"])
    check("+OK" in dropped and "signing off" not in dropped, dropped)
    check_equal(box.snapshot(), before, "the Maildir after a session without QUIT")
    out = box.run(login() + "RETR 1\r\nRETR 2\r\nRETR 3\r\nTOP 4 0\r\nRETR 5\r\nDELE 5\r\nQUIT\r\n",
                  ["--maildir-mark-seen"])
    check(out.endswith("(1 messages deleted)\r\n"), out)
    base = [n.split(":")[0] for n in names]
    check_equal(box.names(), {f"cur/{base[0]}:2,S", f"cur/{base[1]}:2,FST", f"cur/{base[2]}:2,RS",
                              f"new/{base[3]}"}, "the Maildir after RETR and QUIT")
    again = box.run(login() + "UIDL\r\nQUIT\r\n", ["--maildir-mark-seen"])
    check_equal(replies(again)[0][1], "".join(replies(ids)[0][1].splitlines(True)[:4]), "UIDL after marking")
    # Without the option, RETR changes nothing.
    plain_before = box.snapshot()
    box.run(login() + "RETR 4\r\nQUIT\r\n")
    check_equal(box.snapshot(), plain_before, "the Maildir after RETR without --maildir-mark-seen")


def test_choosing_the_format(env):
    """maildir: and a trailing / name a Maildir; without either, a directory
    with cur/, new/ and tmp/ is one; mbox: insists on a spool; a Maildir
    that is not there is an empty maildrop, one without cur/ is refused."""
    box = Maildir(env)
    box.deliver(MESSAGES[0])
    for args in (["--mailbox", "maildir:%h/Maildir"], ["--mailbox", "%h/Maildir"], ["--mailbox", "%h/Maildir/"]):
        out = env.run(login() + "STAT\r\nQUIT\r\n", args=args)[0]
        check("+OK 1 " in out, f"{args}: {out}")
    os.rmdir(box.path + "/tmp")  # what a reader needs is cur/ and new/
    out = env.run(login() + "STAT\r\nQUIT\r\n", args=["--mailbox", "%h/Maildir"])[0]
    check("+OK 1 " in out, f"a Maildir without tmp/: {out}")
    out = env.run(login() + "STAT\r\nQUIT\r\n", args=["--mailbox", "mbox:%h/Maildir"])[0]
    check("-ERR" in out and "+OK 1 " not in out, out)
    out = env.run(login() + "STAT\r\nQUIT\r\n", args=["--mailbox", "maildir:%h/none"])[0]
    check("+OK 0 0" in out, out)
    check(not os.path.exists(env.dir + "/home/alice/none"), "a Maildir was made")
    os.makedirs(env.dir + "/home/alice/broken/new")
    box.own(env.dir + "/home/alice/broken", env.dir + "/home/alice/broken/new")
    out = env.run(login() + "STAT\r\nQUIT\r\n", args=["--mailbox", "maildir:%h/broken"])[0]
    check("-ERR [SYS/PERM] Not a Maildir" in out, out)


def test_links_and_strangers_are_left_out(env):
    """A symbolic link in cur/ is never followed (not listed, not read);
    a hidden file is not a message; a Maildir of someone else is refused."""
    box = Maildir(env)
    box.deliver(MESSAGES[0])
    os.symlink("/etc/passwd", f"{box.path}/cur/1700000099.link.host:2,S")
    with open(f"{box.path}/new/.hidden", "w") as f:
        f.write("not mail\n")
    with open(f"{box.path}/new/1700000098.odd\ncur 1700000001.x", "w") as f:  # a name no journal line can hold
        f.write("Subject: odd\n\nodd\n")
    out = box.run(login() + "STAT\r\nRETR 1\r\nRETR 2\r\nQUIT\r\n")
    check("+OK 1 " in out and "root:" not in out and "odd" not in out, out)
    if IS_ROOT:
        os.chown(box.path, BOB_UID, BOB_UID)
        out = box.run(login() + "STAT\r\nQUIT\r\n")
        check("-ERR [SYS/PERM] Maildir is not the user's own" in out, out)


def test_renamed_messages_are_found(env):
    """A mail reader sets a flag (a rename) after the login: RETR and DELE
    find the message under its new name; a message gone counts as deleted."""
    box = Maildir(env)
    names = [box.deliver(m) for m in MESSAGES[:3]]
    p = subprocess.Popen(env.command(ARGS), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         env=dict(os.environ, **env.variables()))
    p.stdin.write((login() + "STAT\r\n").encode())
    p.stdin.flush()
    while b"+OK 3 " not in p.stdout.readline():
        pass
    os.rename(f"{box.path}/new/{names[0]}", f"{box.path}/cur/{names[0]}:2,S")
    os.rename(f"{box.path}/new/{names[1]}", f"{box.path}/cur/{names[1]}:2,RS")
    os.unlink(f"{box.path}/new/{names[2]}")
    out = p.communicate((("RETR 1\r\nDELE 1\r\nDELE 2\r\nDELE 3\r\nQUIT\r\n").encode()), timeout=30)[0].decode()
    check(wire(MESSAGES[0]).decode().replace("\r\n.", "\r\n..") in out, out)
    check(out.endswith("(3 messages deleted)\r\n"), out)
    check_equal(box.names(), set(), "the Maildir after deleting renamed messages")


def test_one_session_at_a_time(env):
    """A second session gets [IN-USE]; deliveries go on meanwhile and
    appear at the next login."""
    box = Maildir(env)
    box.deliver(MESSAGES[0])
    p = subprocess.Popen(env.command(ARGS), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         env=dict(os.environ, **env.variables()))
    p.stdin.write((login() + "STAT\r\n").encode())
    p.stdin.flush()
    while b"+OK 1 " not in p.stdout.readline():
        pass
    out = box.run(login() + "STAT\r\nQUIT\r\n")
    check("-ERR [IN-USE]" in out, out)
    box.deliver(MESSAGES[1])
    p.communicate(b"QUIT\r\n", timeout=30)
    check("+OK 2 " in box.run(login() + "STAT\r\nQUIT\r\n"), "the delivery during the session")


def test_quota_file_follows_deletions(env):
    """Where a Maildir++ maildirsize file exists, deletions append their
    negative size and count."""
    box = Maildir(env)
    for m in MESSAGES[:3]:
        box.deliver(m)
    with open(f"{box.path}/maildirsize", "w") as f:
        f.write("1000000S,1000C\n300 3\n")
    box.own(f"{box.path}/maildirsize")
    out = box.run(login() + "DELE 1\r\nDELE 3\r\nQUIT\r\n")
    check(out.endswith("(2 messages deleted)\r\n"), out)
    size = len(MESSAGES[0]) + len(MESSAGES[2])
    check_equal(open(f"{box.path}/maildirsize").read(), f"1000000S,1000C\n300 3\n-{size} -2\n", "maildirsize")
    # A FIFO there (no reader) must not hold QUIT, nor the Maildir's lock after it.
    os.unlink(f"{box.path}/maildirsize")
    os.mkfifo(f"{box.path}/maildirsize")
    box.own(f"{box.path}/maildirsize")
    out = box.run(login() + "DELE 1\r\nQUIT\r\n", timeout=20)
    check(out.endswith("(1 messages deleted)\r\n"), out)
    check("+OK 0 " in box.run(login() + "STAT\r\nQUIT\r\n", timeout=20), "the Maildir after a FIFO maildirsize")


def run_with_faults(env, script, **faults):
    variables = {"FAULT_SCOPE": f"{env.dir}/home/alice/", **{k: str(v) for k, v in faults.items()}}
    merged = dict(os.environ, **env.variables(), **variables)
    merged["LD_PRELOAD"] = env.variables()["LD_PRELOAD"] + ":" + SHIM
    return subprocess.run(env.command(ARGS), input=script.encode(), capture_output=True, env=merged,
                          timeout=120).stdout.decode("latin-1")


def test_kill_points(env):
    """Killed, or power-cut (names not yet synced are lost, all or some),
    at every point of QUIT's deletions and at points of the recovery, with
    a delivery between: the next session finds every doomed message deleted
    or every one intact, each other message intact, and no journal."""
    box = Maildir(env)
    count, doomed = 40, [2, 3, 5, 8, 13, 21, 34]
    originals = [box.deliver(b"Subject: %d\n\nbody %d\n" % (i, i), sized=i % 3 != 0,
                             folder="cur" if i % 2 else "new", flags="S") for i in range(count)]
    pristine = {n: open(f"{box.path}/{'cur' if i % 2 else 'new'}/{n}", "rb").read() for i, n in enumerate(originals)}
    everything = sorted(n.split(":")[0] for n in originals)
    kept = sorted(n.split(":")[0] for i, n in enumerate(originals, 1) if i not in doomed)
    script = login() + "".join(f"DELE {i}\r\n" for i in doomed) + "QUIT\r\n"
    journal = env.dir + "/home/alice/.popd-journal"

    def reset():
        for folder in ("new", "cur", "tmp"):
            shutil.rmtree(f"{box.path}/{folder}")
            os.makedirs(f"{box.path}/{folder}")
            box.own(f"{box.path}/{folder}")
        for i, n in enumerate(originals):
            path = f"{box.path}/{'cur' if i % 2 else 'new'}/{n}"
            with open(path, "wb") as f:
                f.write(pristine[n])
            box.own(path)
        for leftover in (journal, journal + ".new"):
            if os.path.exists(leftover):
                os.unlink(leftover)

    reset()
    os.makedirs(env.dir + "/faults", exist_ok=True)
    os.chmod(env.dir + "/faults", 0o1777)  # the shim writes here as the user
    report = env.dir + "/faults/points"
    out = run_with_faults(env, script, FAULT_REPORT=report)
    check(out.endswith(f"({len(doomed)} messages deleted)\r\n"), out)
    points = int(open(report).read())
    check(points >= len(doomed) + 3, f"only {points} points")
    outcomes = {"rolled back": 0, "committed": 0}
    for n, at in enumerate(point for point in range(1, points + 1) for _ in range(3)):
        reset()
        mode = ("kill", "power", "torn")[n % 3]
        out = run_with_faults(env, script, FAULT_AT=at, FAULT_MODE=mode)
        late = box.deliver(b"Subject: late\n\nlate\n").split(":")[0] if n % 2 == 0 else None
        if n % 4 == 1:  # the recovery killed too
            run_with_faults(env, login() + "QUIT\r\n", FAULT_AT=1 + n % 3, FAULT_MODE=mode)
        after = box.run(login() + "STAT\r\nQUIT\r\n")
        check("+OK maildrop has" in after, f"{mode} at {at}: the next session: {after}")
        check(not os.path.exists(journal), f"{mode} at {at}: the journal is still there")
        found = box.bases()
        if late:
            check(late in found, f"{mode} at {at}: the late delivery is gone")
            found.remove(late)
        if "messages deleted)" in out:
            check_equal(found, kept, f"{mode} at {at}: +OK, then a crash")
        if found == everything:
            outcomes["rolled back"] += 1
        elif found == kept:
            outcomes["committed"] += 1
        else:
            raise AssertionError(f"{mode} at point {at}: {len(found)} messages, neither all nor the kept")
        for name in box.names():
            base = name.split("/", 1)[1]
            if base.split(":")[0] != late:
                check_equal(open(f"{box.path}/{name}", "rb").read(), pristine[base], f"{mode} at {at}: {name}")
    print(f"     {points} points, each killed, power-cut and torn: {outcomes['rolled back']} rolled back, "
          f"{outcomes['committed']} committed, 0 damaged")


def test_renames_during_logins(env):
    """A mail reader toggling flags (renames within cur/, new/ to cur/)
    while sessions list and delete: no message missing from a listing or
    listed twice, and deletions find renamed files."""
    box = Maildir(env)
    count = 300
    for i in range(count):
        box.deliver(b"Subject: %d\n\n%d\n" % (i, i), folder="new" if i % 2 else "cur")
    stop = threading.Event()

    def renamer():
        rng = random.Random(7)
        while not stop.is_set():
            for name in list(box.names()):
                folder, base = name.split("/", 1)
                flags = "" if base.endswith("S") else "S"
                try:
                    os.rename(f"{box.path}/{name}", f"{box.path}/cur/{base.split(':')[0]}:2,{flags}")
                except FileNotFoundError:
                    pass
                if rng.random() < 0.01:
                    time.sleep(0.001)

    thread = threading.Thread(target=renamer)
    thread.start()
    try:
        for _ in range(10):
            out = box.run(login() + "UIDL\r\nQUIT\r\n")
            ids = [line.split()[1] for line in replies(out)[0][1].split("\r\n")[:-1]]
            check_equal(len(ids), count, "messages listed during renames")
            check_equal(len(set(ids)), count, "a message listed twice during renames")
        out = box.run(login() + "".join(f"DELE {i}\r\n" for i in range(1, 101)) + "QUIT\r\n")
        check(out.endswith("(100 messages deleted)\r\n"), out)
    finally:
        stop.set()
        thread.join()
    check_equal(len(box.bases()), count - 100, "messages left after deleting during renames")


if __name__ == "__main__":
    run_tests([v for k, v in list(globals().items()) if k.startswith("test_")], "maildir", CHOSEN)
