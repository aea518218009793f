#!/usr/bin/env python3
"""Crash-safety tests of the real popd binary (issue: no mail lost, ever).

- kill points: popd is killed (SIGKILL; a simulated power cut that also
  loses every write no fsync made durable, and every name change no
  directory fsync did; and one that loses a random part of them, 512-byte
  sectors and a prefix of the name changes) at hundreds of distinct points
  of the commit, through tests/faults/shim.c++; the recovering session is
  killed or power-cut too, at times; a new session then checks the mailbox
  byte for byte. CRASH_ALL_POINTS=1 tries every point, in each way
  (minutes; not in CI).
- what recovery must not be fooled by: a journal left over a mailbox that
  another program rewrote; a home that is away when the next session
  comes; an fsync that fails and loses its data (FAULT_LOSE), then a power
  cut; the disk back on another device (a loop device) after the cut.
- full disk: ENOSPC from every write on, or a single EIO, at points across
  the commit: QUIT says -ERR and the mailbox is as before, -ERR "may have
  taken effect" and the next session completes it, or +OK and the deletion
  is complete.
- fsync ordering: the order of writes, fsyncs, renames and truncates in a
  commit follows the journal protocol.
- concurrent delivery: procmail delivers numbered messages while sessions
  retrieve and delete; each is seen exactly once.

Usage: tests/system/crash.py PATH-TO-POPD PATH-TO-LIBFAULTS [TEST-NAME-SUBSTRING]
"""
import errno
import glob
import os
import random
import shutil
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
SHIM = os.path.abspath(sys.argv[2])
ONLY = sys.argv[3] if len(sys.argv) > 3 else ""
sys.argv = sys.argv[:2]
import support  # noqa: E402
from support import Env, check, check_equal, login, make_mbox, IS_ROOT  # noqa: E402

MESSAGES = 3000
ALL_POINTS = os.environ.get("CRASH_ALL_POINTS") == "1"
MODES = ("kill", "power", "torn")


def scenarios():
    rng = random.Random(42)
    return {
        "the first": [1],
        "a random tenth": sorted(rng.sample(range(1, MESSAGES + 1), MESSAGES // 10)),
        "all but the last": list(range(1, MESSAGES)),
    }


class Commit:
    """One scenario: a mailbox, the messages to delete, and the valid outcomes."""

    def __init__(self, env, records, doomed):
        self.env = env
        self.original = "".join(records).encode()
        self.committed = "".join(r for i, r in enumerate(records, 1) if i not in set(doomed)).encode()
        self.script = login() + "".join(f"DELE {i}\r\n" for i in doomed) + "QUIT\r\n"
        self.journal = f"{env.dir}/home/alice/.popd-journal"
        os.makedirs(env.dir + "/faults", exist_ok=True)
        os.chmod(env.dir + "/faults", 0o1777)  # the shim writes here as the user

    def reset(self):
        self.env.write_mailbox(self.original)
        for leftover in (self.journal, self.journal + ".new", self.env.mailbox() + ".lock"):
            if os.path.exists(leftover):
                os.unlink(leftover)

    def run(self, script=None, **faults):
        variables = {"FAULT_SCOPE": f"{self.env.mailbox()}:{self.env.dir}/home/alice/", "FAULT_CHUNK": "16384"}
        variables.update({k: str(v) for k, v in faults.items()})
        preload = self.env.variables()["LD_PRELOAD"] + ":" + SHIM
        env = dict(os.environ, **self.env.variables(), **variables)
        env["LD_PRELOAD"] = preload
        p = subprocess.run(self.env.command(), input=(script or self.script).encode(), capture_output=True,
                           env=env, timeout=120)
        return p.stdout.decode("latin-1")

    def count_points(self, trace=None):
        report = self.env.dir + "/faults/points"
        self.reset()
        extra = {"FAULT_TRACE": trace} if trace else {}
        out = self.run(FAULT_REPORT=report, **extra)
        check(out.rstrip().endswith("messages deleted)"), out[-300:])
        check_equal(open(self.env.mailbox(), "rb").read(), self.committed, "fault-free commit")
        return int(open(report).read())

    def state_after_next_session(self, restarts=None):
        """Runs a fault-free session (which recovers first); returns the
        mailbox. After a failed sync popd touches nothing until the system
        restarts: the next session is refused, and a restart (the marker's
        boot id made an earlier boot's) lets the one after it recover;
        `restarts` counts those."""
        out, _ = self.env.run(login() + "STAT\r\nQUIT\r\n")
        marker = self.journal + ".sync-failed"
        if "Mailbox waits for the disk to be checked" in out:
            check(glob.glob(glob.escape(marker) + "*"), "refused for a failed sync, but there is no marker")
            check(restarts is not None, "a failed sync where none was injected: " + out)
            restarts.append(1)
            restart(self.journal)
            out, _ = self.env.run(login() + "STAT\r\nQUIT\r\n")
        check("+OK maildrop has" in out, "next session: " + out)
        check(not os.path.exists(self.journal), "journal still there after recovery")
        check(not os.path.exists(marker), "the marker of an earlier boot is still there")
        return open(self.env.mailbox(), "rb").read()


def restart(journal):
    """What a restart does to the failed-sync markers beside `journal`: the
    boot id they hold, or that names them, is an earlier boot's now."""
    for name in glob.glob(glob.escape(journal) + ".sync-failed.*"):
        os.unlink(name)
    if os.path.exists(journal + ".sync-failed"):
        with open(journal + ".sync-failed", "w") as f:
            f.write("an earlier boot\n")


APPEND = ("import fcntl, sys\nwith open(sys.argv[1], 'ab') as f:\n    fcntl.lockf(f, fcntl.LOCK_EX)\n"
          "    f.write(sys.stdin.buffer.read())\n    f.flush()\n    import os; os.fsync(f.fileno())\n")


def deliver_as_mda(env, message):
    """Appends a message the way liblockfile-based MDAs do: a pid-checked
    dotlock (a dead session's lock is taken over at once) and an fcntl lock."""
    cmd = ["dotlockfile", "-p", "-r", "3", "-i", "1", "-l", env.mailbox() + ".lock",
           "/usr/bin/python3", "-c", APPEND, env.mailbox()]
    if IS_ROOT:
        cmd = ["setpriv", f"--reuid={support.ALICE_UID}", f"--regid={support.ALICE_GID}", "--clear-groups"] + cmd
    p = subprocess.run(cmd, input=message, capture_output=True, timeout=60)
    check(p.returncode == 0, f"delivery failed: {p.stderr!r}")


def sample(total, wanted):
    if total <= wanted:
        return list(range(1, total + 1))
    step = total / wanted
    return sorted({max(1, round(1 + i * step)) for i in range(wanted)} | {total})


def test_kill_points(env):
    messages, records = make_mbox(MESSAGES, seed=5)
    tried = late_deliveries = killed_recoveries = 0
    by_mode = {mode: 0 for mode in MODES}
    for name, doomed in scenarios().items():
        commit = Commit(env, records, doomed)
        points = commit.count_points()
        chosen = [at for at in range(1, points + 1) for _ in MODES] if ALL_POINTS else sample(points, 160)
        outcomes = {"rolled back": 0, "committed": 0}
        for n, at in enumerate(chosen):
            commit.reset()
            mode = MODES[n % len(MODES)]
            by_mode[mode] += 1
            out = commit.run(FAULT_AT=at, FAULT_MODE=mode)
            # Every third time, mail arrives before the next session.
            late = b""
            if n % 3 == 0:
                late = f"From late@example.org Mon Jan  1 00:00:00 2024\nSubject: late {at}\n\nlate\n\n".encode()
                deliver_as_mda(env, late)
                late_deliveries += 1
            if n % 5 == 1:  # and the recovery itself is killed, or power-cut, too
                commit.run(login() + "QUIT\r\n", FAULT_AT=1 + n % 23, FAULT_MODE=MODES[(n // 5) % 3])
                killed_recoveries += 1
            after = commit.state_after_next_session()
            check(after.endswith(late), f"{name}: mail delivered after {mode} at point {at} is damaged")
            after = after[:len(after) - len(late)]
            if "messages deleted)" in out:  # killed after the reply: it must hold
                check(after == commit.committed, f"{name}: +OK, then killed at point {at}: commit lost")
            if after == commit.original:
                outcomes["rolled back"] += 1
            elif after == commit.committed:
                outcomes["committed"] += 1
            else:
                raise AssertionError(f"{name}: {mode} at point {at} of {points}: mailbox damaged "
                                     f"({len(after)} bytes; original {len(commit.original)}, "
                                     f"committed {len(commit.committed)})")
        tried += len(chosen)
        print(f"     delete {name}: {len(chosen)} kill points of {points} in the session, "
              f"{outcomes['rolled back']} rolled back, {outcomes['committed']} committed, 0 damaged")
    print(f"     points tried: {tried} ({', '.join(f'{n} {m}' for m, n in by_mode.items())}), 0 damaged; "
          f"mail delivered between kill and recovery {late_deliveries} times "
          f"(always intact); the recovering session killed or power-cut too {killed_recoveries} times")
    check(tried >= 300, "fewer than 300 kill points")


def test_full_disk(env):
    messages, records = make_mbox(MESSAGES, seed=6)
    tried = 0
    outcomes = {"-ERR, unchanged": 0, "+OK, committed": 0, "unconfirmed": 0}
    restarts = []
    for name, doomed in scenarios().items():
        commit = Commit(env, records, doomed)
        points = commit.count_points()
        for errno_, persist in ((28, 1), (5, 0)):  # ENOSPC from then on; a single EIO
            for at in sample(points, 25):
                commit.reset()
                out = commit.run(FAULT_AT=at, FAULT_MODE="fail", FAULT_ERRNO=errno_, FAULT_PERSIST=persist)
                quit_reply = out.rstrip().split("\r\n")[-1]
                after = commit.state_after_next_session(restarts)
                if quit_reply.startswith("-ERR"):
                    check(quit_reply.startswith("-ERR [SYS/TEMP]"), quit_reply)
                    # Only when the final fsync after the truncate fails can the
                    # deletion not be undone; popd says so, and the next session
                    # completes it.
                    unconfirmed = "may have taken effect" in quit_reply
                    expected = commit.committed if unconfirmed else commit.original
                    check(after == expected, f"{name}: {quit_reply} at point {at}, but the mailbox is neither")
                    outcomes["unconfirmed" if unconfirmed else "-ERR, unchanged"] += 1
                else:
                    check(quit_reply.startswith("+OK"), quit_reply)
                    check(after == commit.committed, f"{name}: +OK at point {at} but the commit is incomplete")
                    outcomes["+OK, committed"] += 1
                tried += 1
    print(f"     failures injected: {tried}: {outcomes}; {len(restarts)} times the next session waited for a "
          f"restart after a failed sync, and the one after it recovered")
    check(restarts, "no failed sync made the next session wait")


def test_fsync_ordering(env):
    """The journal protocol (popd.8, RECOVERY): the journal is durable under
    its name before the mailbox is touched; a step's copy in the journal is
    durable before its progress record is written, and that record before
    the step moves anything; each step's moves are durable before anything
    more is written to the journal; the truncate comes last, durable before
    the journal goes."""
    messages, records = make_mbox(MESSAGES, seed=8)
    commit = Commit(env, records, [5, 6, 100])
    trace = env.dir + "/faults/trace"
    commit.count_points(trace)
    calls = [line.split(" ", 2)[1:] for line in open(trace).read().splitlines()]
    mailbox, journal, home = env.mailbox(), commit.journal, f"{env.dir}/home/alice"

    def first(pred, start=0):
        return next(i for i in range(start, len(calls)) if pred(*calls[i]))

    renamed = first(lambda c, w: c == "rename" and w.endswith("-> " + journal))
    journal_synced = max(i for i in range(renamed) if calls[i] == ["fsync", journal + ".new"])
    dir_synced = first(lambda c, w: c == "fsync" and w == home, renamed)
    moves = first(lambda c, w: c == "pwrite" and w.startswith(mailbox + " "))
    check(journal_synced < renamed < dir_synced < moves, "journal durable before the mailbox is touched")
    mailbox_dirty = copy_dirty = record_dirty = False
    records_written = 0
    for call, what in calls[first(lambda c, w: c == "pwrite" and w.startswith(journal + " ")):]:
        if call == "pwrite" and what.startswith(mailbox + " "):
            check(not copy_dirty and not record_dirty, "a step began before its journal entries were durable")
            mailbox_dirty = True
        elif call == "pwrite" and what.startswith(journal + " "):
            check(not mailbox_dirty, "the journal was written to before the last step was durable")
            offset, length = (int(x) for x in what.rsplit(" @", 1)[1].split("+"))
            if offset % 4096 == 0 and length == 88:  # a progress record, in a block of its own
                check(not copy_dirty, "a progress record was written before the step's copy was durable")
                record_dirty, records_written = True, records_written + 1
            else:
                copy_dirty = True
        elif call == "fsync" and what == mailbox:
            mailbox_dirty = False
        elif call == "fsync" and what == journal:
            copy_dirty = record_dirty = False
        elif call == "ftruncate" and what.startswith(mailbox + " "):
            check(not mailbox_dirty and not record_dirty, "truncated before the marker was durable")
            break
    check(records_written >= 3, f"only {records_written} progress records: the commit was not done in steps")
    # Two slots take turns holding the steps' copies: the journal stays small
    # however much is moved (here almost the whole mailbox).
    extent = max(sum(int(x) for x in what.rsplit(" @", 1)[1].split("+"))
                 for call, what in calls if call == "pwrite" and what.startswith((journal + " ", journal + ".new ")))
    check(extent < len(commit.committed) // 2, f"the journal reached {extent} bytes")
    truncated = first(lambda c, w: c == "ftruncate" and w.startswith(mailbox + " "))
    truncate_synced = first(lambda c, w: c == "fsync" and w == mailbox, truncated)
    removed = first(lambda c, w: c == "unlink" and w == journal)
    check(truncated < truncate_synced < removed, "truncate durable before the journal goes")
    print(f"     {records_written - 2} steps: each one's copy durable before its progress record, that before "
          f"its moves, and those before the next")


def test_damaged_journal(env):
    """A journal damaged after popd made it durable is never acted on: the
    mailbox is refused and left alone until the journal is sound again."""
    messages, records = make_mbox(MESSAGES, seed=9)
    commit = Commit(env, records, [1, 50])
    trace = env.dir + "/faults/trace"
    commit.count_points(trace)
    calls = open(trace).read().splitlines()
    # Killed in the middle of the first move: the journal is all there is.
    at = next(int(l.split()[0]) for l in calls if l.split()[1] == "pwrite" and env.mailbox() + " " in l) + 1
    commit.reset()
    commit.run(FAULT_AT=at, FAULT_MODE="kill")
    check(os.path.exists(commit.journal), "no journal after the kill")
    half_done = open(env.mailbox(), "rb").read()
    check(half_done not in (commit.original, commit.committed), "the kill did not land mid-move")
    sound = open(commit.journal, "rb").read()
    # The plan, and the journal's copy of the bytes the first step overwrote
    # (the second message's are the first of them).
    saved = sound.find(records[1].encode()[:200])
    check(saved > 0, "the first step's saved bytes are not in the journal")
    for offset in (20, 100, saved, saved + len(records[1]) // 2):
        damaged = bytearray(sound)
        damaged[offset] ^= 0x40
        with open(commit.journal, "wb") as f:
            f.write(damaged)
        out, _ = env.run(login() + "STAT\r\nQUIT\r\n")
        check("-ERR [SYS/TEMP]" in out, f"damaged at {offset}: {out}")
        check_equal(open(env.mailbox(), "rb").read(), half_done, f"mailbox after a journal damaged at {offset}")
    with open(commit.journal, "wb") as f:
        f.write(sound)
    after = commit.state_after_next_session()
    check(after == commit.committed, "the sound journal did not complete the commit")


def test_small_home(env):
    """The journal holds two steps' copies, not the rest of the mailbox: a
    commit that moves 6 MB succeeds with a 4 MiB file system for the
    journal; and with that file system full, QUIT says -ERR and nothing
    changed (a real ENOSPC, in a private mount namespace)."""
    if not IS_ROOT or subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode != 0:
        print("     (skipped: needs root and mount namespaces)")
        return
    messages, records = make_mbox(MESSAGES, seed=10)
    commit = Commit(env, records, [1])
    check(len(commit.committed) > 6 << 20, "the mailbox is too small to show anything")
    small = env.dir + "/small"
    os.mkdir(small)

    def run_with_small(fill):
        command = env.command(["--journal", small + "/%u.journal"])
        script = 'mount -t tmpfs -o size=4m,mode=1777 tmpfs "$1" && ' + \
                 ('head -c 8M /dev/zero > "$1/fill" 2>/dev/null; ' if fill else "") + 'shift && exec "$@"'
        p = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", small] + command,
                           input=commit.script.encode(), capture_output=True, env=dict(os.environ, **env.variables()),
                           timeout=120)
        return p.stdout.decode("latin-1").rstrip().split("\r\n")[-1]

    commit.reset()
    quit_reply = run_with_small(fill=True)
    check(quit_reply.startswith("-ERR [SYS/TEMP]") and "may have" not in quit_reply, "full: " + quit_reply)
    check_equal(open(env.mailbox(), "rb").read(), commit.original, "the mailbox after a commit with no room")
    quit_reply = run_with_small(fill=False)
    check(quit_reply.startswith("+OK"), "4 MiB free: " + quit_reply)
    check_equal(open(env.mailbox(), "rb").read(), commit.committed, "the mailbox after the commit")
    print(f"     {len(commit.committed):,} bytes moved with a journal on a 4 MiB file system; a full one: -ERR, "
          f"unchanged")


def trace_of(commit):
    """The counted calls of a fault-free commit: [(number, call, what)]."""
    trace = commit.env.dir + "/faults/trace"
    if os.path.exists(trace):
        os.unlink(trace)
    commit.count_points(trace)
    return [(int(n), call, what) for n, call, what in (l.split(" ", 2) for l in open(trace).read().splitlines())]


def progress_records(calls, journal):
    """The numbers of the calls that write progress records, in order."""
    return [n for n, call, what in calls if call == "pwrite" and what.startswith(journal + " @")
            and what.endswith("+88") and int(what.rsplit("@", 1)[1].split("+")[0]) % 4096 == 0]


def test_stale_journal_over_a_rewritten_mailbox(env):
    """A commit cut short, then another program (a mail reader, an IMAP
    server) rewrites the mailbox in place before the next POP login: the
    journal no longer fits, and is refused and kept, never replayed over
    the new contents."""
    messages, records = make_mbox(MESSAGES, seed=12)
    commit = Commit(env, records, [1, 2, 3])
    calls = trace_of(commit)
    moves = [n for n, call, what in calls if call == "pwrite" and what.startswith(env.mailbox() + " ")]
    commit.reset()
    commit.run(FAULT_AT=moves[len(moves) // 2], FAULT_MODE="kill")
    check(os.path.exists(commit.journal), "no journal after the kill")
    # The mail reader keeps the last 100 messages (as it read them).
    rewritten = "".join(records[-100:]).encode()
    with open(env.mailbox(), "r+b") as f:
        f.write(rewritten)
        f.truncate()
    out, _ = env.run(login() + "STAT\r\nQUIT\r\n")
    check("-ERR [SYS/TEMP] Recovery journal does not fit the mailbox" in out, out)
    check_equal(open(env.mailbox(), "rb").read(), rewritten, "the rewritten mailbox")
    check(os.path.exists(commit.journal), "the journal that does not fit was removed")


def killed_at(env, seed, pick, mode="kill"):
    """A commit of DELE 10-12 cut short (`mode`) at the call pick(calls, commit) chooses."""
    messages, records = make_mbox(MESSAGES, seed=seed)
    commit = Commit(env, records, [10, 11, 12])
    at = pick(trace_of(commit), commit)
    commit.reset()
    commit.run(FAULT_AT=at, FAULT_MODE=mode)
    check(os.path.exists(commit.journal), f"no journal after the {mode}")
    return commit


def first_call(name, path):
    return lambda calls, commit: next(n for n, c, what in calls if c == name and what.split(" ")[0] == path)


def mark_read(env, index=50):
    """A local mail reader marks message `index` read: a Status line, and
    the file rewritten from there on."""
    data = open(env.mailbox(), "rb").read()
    at = -1
    for _ in range(index):
        at = data.index(b"\nFrom ", at + 1)
    at = data.index(b"\n", at + 1) + 1
    changed = data[:at] + b"Status: RO\n" + data[at:]
    with open(env.mailbox(), "r+b") as f:
        f.write(changed)
        f.truncate()
    return changed


def test_stale_bytes_rewritten_before_the_truncate(env):
    """Killed with every step done and the marker written, before the
    truncate. A message arrives; the user's mail reader shows the stale
    bytes as duplicates, the user deletes them, and the reader rewrites the
    file from there: the new message now lies where the truncate would cut.
    Refused and left alone, the new message kept."""
    commit = killed_at(env, 21, first_call("ftruncate", env.mailbox()))
    deliver_as_mda(env, b"From late@example.org Mon Jan  1 00:00:00 2024\nSubject: new\n\nnew\n\n")
    data = open(env.mailbox(), "rb").read()
    first_stale = data.index(b"\nFrom ", len(commit.committed) + 16) + 1
    rewritten = data[:first_stale] + data[len(commit.original):]
    with open(env.mailbox(), "r+b") as f:
        f.write(rewritten)
        f.truncate()
    out, _ = env.run(login() + "STAT\r\nQUIT\r\n")
    check("-ERR [SYS/TEMP] Recovery journal does not fit the mailbox" in out, out)
    check_equal(open(env.mailbox(), "rb").read(), rewritten, "the mailbox")
    check(os.path.exists(commit.journal), "the journal that does not fit was removed")


def test_journals_that_can_do_no_harm(env):
    """A journal whose commit had moved nothing (a power cut before the
    first progress record), or had done all but remove itself (killed after
    the truncate), no longer blocks a mailbox another program changed since:
    it is removed, and the mailbox served as that program left it."""
    journal = env.dir + "/home/alice/.popd-journal"
    first_record = lambda calls, commit: progress_records(calls, commit.journal)[0]
    for pick, mode, state in ((first_record, "power", "original"), (first_call("unlink", journal), "kill", "committed")):
        commit = killed_at(env, 24, pick, mode)
        check_equal(open(env.mailbox(), "rb").read(), getattr(commit, state), f"the mailbox after the {mode}")
        changed = mark_read(env)
        out, _ = env.run(login() + "STAT\r\nQUIT\r\n")
        check(f"+OK maildrop has {MESSAGES - (3 if state == 'committed' else 0)} messages" in out, out)
        check_equal(open(env.mailbox(), "rb").read(), changed, "the mailbox")
        check(not os.path.exists(commit.journal), "the journal is still there")


def test_home_that_is_an_empty_mount_point(env):
    """The home is a file system of its own (NFS, autofs, pam_mount). A
    commit is killed mid-step; the next login comes while the home is not
    mounted, its empty mount point in its place: refused, the half-moved
    mailbox never served nor cut. Mounted again, the commit completes."""
    if not IS_ROOT or not shutil.which("losetup") or not shutil.which("mkfs.ext4"):
        print("     (skipped: needs root, losetup and mkfs.ext4)")
        return
    home, image = env.dir + "/home/alice", env.dir + "/home.img"
    with open(image, "wb") as f:
        f.truncate(64 << 20)
    subprocess.run(["mkfs.ext4", "-q", image], check=True)
    device = subprocess.run(["losetup", "--find", "--show", image], capture_output=True, text=True)
    if device.returncode != 0:
        print("     (skipped: no loop device)")
        return
    device = device.stdout.strip()
    os.chown(home, 0, 0)
    os.chmod(home, 0o755)  # the mount point, as it is left when nothing is mounted
    mounted = False
    try:
        subprocess.run(["mount", device, home], check=True)
        mounted = True
        os.chown(home, support.ALICE_UID, support.ALICE_GID)
        os.chmod(home, 0o700)
        messages, records = make_mbox(MESSAGES, seed=13)
        commit = Commit(env, records, sorted(random.Random(13).sample(range(1, MESSAGES + 1), 300)))
        calls = trace_of(commit)
        moves = [n for n, call, what in calls if call == "pwrite" and what.startswith(env.mailbox() + " ")]
        commit.reset()
        commit.run(FAULT_AT=moves[len(moves) // 2], FAULT_MODE="kill")
        check(os.path.exists(commit.journal), "no journal after the kill")
        half_moved = open(env.mailbox(), "rb").read()
        subprocess.run(["umount", home], check=True)
        mounted = False
        out, _ = env.run(login() + "STAT\r\nDELE 1\r\nQUIT\r\n")
        check("-ERR [SYS/TEMP] Mailbox cannot be checked for an interrupted commit" in out, out)
        check_equal(open(env.mailbox(), "rb").read(), half_moved, "the mailbox while the home is not mounted")
        subprocess.run(["mount", device, home], check=True)
        mounted = True
        check(commit.state_after_next_session() == commit.committed, "the mailbox once the home is back")
        print("     killed mid-step, the home unmounted: refused; mounted again: committed exactly")
    finally:
        if mounted:
            subprocess.run(["umount", home])
        subprocess.run(["losetup", "-d", device])
        os.chown(home, support.ALICE_UID, support.ALICE_GID)
        os.chmod(home, 0o700)


def test_unreadable_home_and_empty_marker(env):
    """A home the session cannot read says nothing of a journal, and a disk
    failing every call leaves an empty failed-sync marker: each refused with
    its own words."""
    messages, records = make_mbox(MESSAGES, seed=26)
    env.write_mailbox("".join(records).encode())
    home = env.dir + "/home/alice"
    os.chmod(home, 0)
    try:
        out, _ = env.run(login() + "STAT\r\nQUIT\r\n")
        check("-ERR [SYS/TEMP] Mailbox cannot be checked for an interrupted commit" in out, out)
    finally:
        os.chmod(home, 0o700)
    commit = Commit(env, records, [10, 11, 12])
    calls = trace_of(commit)
    record = progress_records(calls, commit.journal)[1]
    sync = next(n for n, call, what in calls if n > record and call == "fsync" and what == commit.journal)
    commit.reset()
    out = commit.run(FAULT_AT=sync, FAULT_MODE="fail", FAULT_ERRNO=5, FAULT_PERSIST=1)
    check("may have taken effect" in out.rstrip().split("\r\n")[-1], out[-300:])
    markers = glob.glob(glob.escape(commit.journal) + ".sync-failed*")
    check(markers, "no failed-sync marker")
    out, _ = env.run(login() + "STAT\r\nQUIT\r\n")
    check("-ERR [SYS/TEMP] Mailbox waits for the disk to be checked" in out, out)
    restart(commit.journal)
    check(commit.state_after_next_session() == commit.committed, "the mailbox after the restart")
    print(f"     home mode 000: refused; every call failing from a record's sync: "
          f"{', '.join(os.path.basename(m) for m in markers)}, refused until a restart, then committed")


def test_journal_on_bad_sectors_is_kept(env):
    """A commit killed mid-step; the next session cannot read the journal's
    progress records (EIO, a bad sector): refused, the journal kept, the
    mailbox untouched; once the journal reads again, the commit completes."""
    pick = lambda calls, commit: [n for n, call, what in calls
                                  if call == "pwrite" and what.startswith(env.mailbox() + " ")][5]
    commit = killed_at(env, 21, pick)
    half_moved = open(env.mailbox(), "rb").read()
    out = commit.run(login() + "STAT\r\nQUIT\r\n", FAULT_BAD_SECTORS=commit.journal)
    check("-ERR [SYS/TEMP]" in out and "maildrop has" not in out, out)
    check(os.path.exists(commit.journal), "the journal it could not read was removed")
    check_equal(open(env.mailbox(), "rb").read(), half_moved, "the mailbox while the journal cannot be read")
    check(commit.state_after_next_session() == commit.committed, "the mailbox once the journal reads again")


def test_failed_recovery_keeps_the_pending_mark(env):
    """Killed before the truncate, a message delivered, and the recovery's
    own journal cannot be made (a full home): the old journal stays, and so
    does the mailbox's mark, so that an empty mount point in place of the
    home is still refused. Back, the commit completes with the new mail."""
    commit = killed_at(env, 21, first_call("ftruncate", env.mailbox()))
    new = b"From late@example.org Mon Jan  1 00:00:00 2024\nSubject: new\n\nnew\n\n"
    deliver_as_mda(env, new)
    out = commit.run(login() + "STAT\r\nQUIT\r\n", FAULT_SCOPE=commit.journal + ".new", FAULT_AT=2,
                     FAULT_MODE="fail", FAULT_ERRNO=28, FAULT_PERSIST=1)
    check("-ERR [SYS/TEMP]" in out, out)
    check(os.path.exists(commit.journal), "the journal is gone after the failed recovery")
    try:
        os.getxattr(env.mailbox(), "user.popd.journal")
    except OSError as e:
        if e.errno == errno.ENOTSUP:
            print("     (no user extended attributes here: the mark is not tested)")
            return
        raise AssertionError(f"the mark is gone after the failed recovery: {e}")
    home = env.dir + "/home/alice"
    os.rename(home, home + ".away")
    os.mkdir(home, 0o755)  # an empty mount point
    try:
        out, _ = env.run(login() + "STAT\r\nQUIT\r\n")
        check("-ERR [SYS/TEMP] Mailbox cannot be checked for an interrupted commit" in out, out)
    finally:
        os.rmdir(home)
        os.rename(home + ".away", home)
    check(commit.state_after_next_session() == commit.committed + new, "the mailbox once the home is back")


def test_home_unavailable_after_a_crash(env):
    """A commit killed mid-step; the next login comes while the home, where
    the journal is, is unavailable (NFS or autofs down): refused, not served
    half-moved. Mail arrives meanwhile; when the home is back the commit is
    completed and the new mail kept."""
    if not IS_ROOT:
        print("     (skipped: needs root)")
        return
    messages, records = make_mbox(MESSAGES, seed=13)
    commit = Commit(env, records, sorted(random.Random(13).sample(range(1, MESSAGES + 1), 300)))
    calls = trace_of(commit)
    moves = [n for n, call, what in calls if call == "pwrite" and what.startswith(env.mailbox() + " ")]
    commit.reset()
    commit.run(FAULT_AT=moves[len(moves) // 2], FAULT_MODE="kill")
    half_moved = open(env.mailbox(), "rb").read()
    check(half_moved not in (commit.original, commit.committed), "the kill did not land mid-commit")
    home = env.dir + "/home/alice"
    os.rename(home, home + ".away")
    try:
        out, _ = env.run(login() + "STAT\r\nDELE 1\r\nQUIT\r\n")
        check("-ERR [SYS/TEMP] Mailbox cannot be checked for an interrupted commit" in out, out)
        check_equal(open(env.mailbox(), "rb").read(), half_moved, "the mailbox while the home is away")
        new = []
        for i in range(9):
            new.append(f"From late@example.org Mon Jan  1 00:00:00 2024\nSubject: new {i}\n\nnew\n\n".encode())
            deliver_as_mda(env, new[-1])
    finally:
        os.rename(home + ".away", home)
    after = commit.state_after_next_session()
    check(after == commit.committed + b"".join(new), "the mailbox after the home came back")


def test_failed_sync_then_power_cut(env):
    """EIO on the sync of a progress record, and the data of that sync lost
    (as Linux may lose it: FAULT_LOSE). The next session in this boot does
    not trust what it reads back and waits; a power cut then loses the
    record on the disk too; after the restart the commit is completed
    exactly."""
    messages, records = make_mbox(MESSAGES, seed=14)
    commit = Commit(env, records, [1])
    calls = trace_of(commit)
    record = progress_records(calls, commit.journal)[2]
    sync = next(n for n, call, what in calls if n > record and call == "fsync" and what == commit.journal)
    commit.reset()
    lost = env.dir + "/faults/lost"
    out = commit.run(FAULT_AT=sync, FAULT_MODE="fail", FAULT_ERRNO=5, FAULT_LOSE=lost)
    check("may have taken effect" in out.rstrip().split("\r\n")[-1], out[-300:])
    check(os.path.exists(lost), "no write was lost")
    out, _ = env.run(login() + "STAT\r\nQUIT\r\n")
    check("-ERR [SYS/TEMP] Mailbox waits for the disk to be checked" in out, f"the next session: {out}")
    # The power cut: what the failed sync was to make durable is not on the disk.
    for line in reversed(open(lost).read().splitlines()):
        path, offset, old_size, old = line.split(" ")
        with open(path, "r+b") as f:
            f.truncate(int(old_size))
            f.seek(int(offset))
            f.write(bytes.fromhex(old))
            f.truncate(int(old_size))
    restart(commit.journal)
    check_equal(commit.state_after_next_session(), commit.committed, "the mailbox after the restart")


def test_remount_on_another_device(env):
    """A power cut in the third step of DELE 1; the disk comes back on
    another device (loop1 instead of loop0: st_dev differs, as LVM, btrfs
    or NFS may make it after a reboot). The journal still names the
    mailbox, and the next session completes the commit."""
    if not IS_ROOT or not shutil.which("losetup") or not shutil.which("mkfs.ext4"):
        print("     (skipped: needs root, losetup and mkfs.ext4)")
        return
    image, placeholder, disk = env.dir + "/disk.img", env.dir + "/placeholder.img", env.dir + "/disk"
    for path, size in ((image, 96 << 20), (placeholder, 1 << 20)):
        with open(path, "wb") as f:
            f.truncate(size)
    subprocess.run(["mkfs.ext4", "-q", image], check=True)
    os.mkdir(disk)

    def attach():
        device = subprocess.run(["losetup", "--find", "--show", image], capture_output=True, text=True)
        if device.returncode != 0:
            return None
        subprocess.run(["mount", device.stdout.strip(), disk], check=True)
        return device.stdout.strip()

    def detach(device):
        subprocess.run(["umount", disk], check=True)
        subprocess.run(["losetup", "-d", device], check=True)

    first = attach()
    if not first:
        print("     (skipped: no loop device)")
        return
    taken = None
    try:
        for directory, owner, mode in (("mail", 0, 0o1777), ("home", 0, 0o755), ("home/alice", support.ALICE_UID, 0o700)):
            os.mkdir(f"{disk}/{directory}")
            os.chown(f"{disk}/{directory}", owner, owner)
            os.chmod(f"{disk}/{directory}", mode)
        messages, records = make_mbox(MESSAGES, seed=15)
        mailbox, journal = disk + "/mail/alice", disk + "/home/alice/.popd-journal"
        original = "".join(records).encode()
        committed = "".join(records[1:]).encode()
        args = ["--mailbox", disk + "/mail/%u", "--journal", disk + "/home/%u/.popd-journal",
                "--index", disk + "/home/%u/.popd-index"]

        def write_mailbox():
            with open(mailbox, "wb") as f:
                f.write(original)
            os.chown(mailbox, support.ALICE_UID, support.ALICE_GID)
            os.chmod(mailbox, 0o600)

        def run(script, **faults):
            variables = dict(os.environ, **env.variables(), FAULT_SCOPE=f"{mailbox}:{disk}/home/alice/",
                             FAULT_CHUNK="16384", **{k: str(v) for k, v in faults.items()})
            variables["LD_PRELOAD"] += ":" + SHIM
            return subprocess.run(env.command(args), input=script.encode(), capture_output=True, env=variables,
                                  timeout=120).stdout.decode("latin-1")

        write_mailbox()
        trace = env.dir + "/faults/disk-trace"
        os.makedirs(env.dir + "/faults", exist_ok=True)
        os.chmod(env.dir + "/faults", 0o1777)
        out = run(login() + "DELE 1\r\nQUIT\r\n", FAULT_TRACE=trace)
        check(out.rstrip().endswith("(1 messages deleted)"), out[-200:])
        calls = [(int(n), c, w) for n, c, w in (l.split(" ", 2) for l in open(trace).read().splitlines())]
        third = progress_records(calls, journal)[2]
        cut = next(n for n, call, what in calls if n > third and call == "pwrite" and what.startswith(mailbox + " "))
        write_mailbox()
        run(login() + "DELE 1\r\nQUIT\r\n", FAULT_AT=cut + 2, FAULT_MODE="power")
        check(os.path.exists(journal), "no journal after the power cut")
        device_before, device_name = os.stat(mailbox).st_dev, first
        detach(first)
        first = None
        # The same disk, found at another device.
        taken = subprocess.run(["losetup", "--find", "--show", placeholder], capture_output=True, text=True,
                               check=True).stdout.strip()
        first = attach()
        check(os.stat(mailbox).st_dev != device_before, "the device number did not change")
        out = run(login() + "STAT\r\nQUIT\r\n")
        check("+OK maildrop has 2999 messages" in out, f"after the remount: {out}")
        check(open(mailbox, "rb").read() == committed, "the mailbox after the remount is not the committed one")
        check(not os.path.exists(journal), "the journal is still there")
        print(f"     power cut in step 3 of DELE 1, the disk back on {first} instead of {device_name}: "
              f"committed exactly")
    finally:
        if first:
            detach(first)
        if taken:
            subprocess.run(["losetup", "-d", taken])


def test_copy_on_write_full_disk(env):
    """On a copy-on-write file system (btrfs on a loop image) moving mail
    within the mailbox needs new space: a full disk stops a step half way.
    QUIT says the deletions may have taken effect, and once there is room
    the next session completes them; nothing is lost."""
    if not IS_ROOT or not shutil.which("mkfs.btrfs") or not shutil.which("losetup"):
        print("     (skipped: needs root, losetup and mkfs.btrfs)")
        return
    image, disk = env.dir + "/cow.img", env.dir + "/cow"
    with open(image, "wb") as f:
        f.truncate(160 << 20)
    subprocess.run(["mkfs.btrfs", "-q", "-f", image], check=True, capture_output=True)
    os.mkdir(disk)
    device = subprocess.run(["losetup", "--find", "--show", image], capture_output=True, text=True)
    if device.returncode != 0:
        print("     (skipped: no loop device)")
        return
    device = device.stdout.strip()
    try:
        if subprocess.run(["mount", device, disk], capture_output=True).returncode != 0:
            print("     (skipped: btrfs cannot be mounted here)")
            return
        for directory, owner, mode in (("mail", 0, 0o1777), ("home", 0, 0o755), ("home/alice", support.ALICE_UID, 0o700)):
            os.mkdir(f"{disk}/{directory}")
            os.chown(f"{disk}/{directory}", owner, owner)
            os.chmod(f"{disk}/{directory}", mode)
        messages, records = make_mbox(2 * MESSAGES, seed=16)
        original, committed = "".join(records).encode(), "".join(records[1:]).encode()
        mailbox, filler = disk + "/mail/alice", disk + "/filler"
        with open(mailbox, "wb") as f:
            f.write(original)
        os.chown(mailbox, support.ALICE_UID, support.ALICE_GID)
        os.chmod(mailbox, 0o600)
        subprocess.run(["sync"])
        free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
        with open(filler, "wb") as f:  # leave room for the journal, not for the moves
            f.write(bytes(max(0, free - (8 << 20))))
        subprocess.run(["sync"])
        args = ["--mailbox", disk + "/mail/%u", "--journal", disk + "/home/%u/.popd-journal",
                "--index", disk + "/home/%u/.popd-index"]
        out, _ = env.run(login() + "DELE 1\r\nQUIT\r\n", args)
        quit_reply = out.rstrip().split("\r\n")[-1]
        check("may have taken effect" in quit_reply and "No space left" in quit_reply,
              f"no full disk in the middle of a step: {quit_reply}")
        os.unlink(filler)
        out, _ = env.run(login() + "STAT\r\nQUIT\r\n", args)
        check("+OK maildrop has 5999 messages" in out, f"the next session, with room: {out}")
        check(open(mailbox, "rb").read() == committed, "the mailbox after the next session is not the committed one")
        print(f"     btrfs full in the middle of a step: QUIT said it may have taken effect; with room the next "
              f"session completed it")
    finally:
        subprocess.run(["umount", disk], capture_output=True)
        subprocess.run(["losetup", "-d", device], capture_output=True)


def test_concurrent_delivery(env):
    """procmail delivers 1,000 numbered messages while at least 30 sessions retrieve and delete."""
    env.write_mailbox(b"")
    rc = env.dir + "/procmailrc"
    with open(rc, "w") as f:
        # Dotlock (":0:" makes <mailbox>.lock) plus procmail's kernel locks, as Debian delivers.
        f.write(f"LOCKSLEEP=1\nLOCKTIMEOUT=0\n:0:\n{env.mailbox()}\n")
    os.chmod(rc, 0o644)
    total = 1000
    stop = threading.Event()
    delivered = []

    def deliver(numbers):
        for n in numbers:
            msg = (f"From sender@example.org Mon Jan  1 00:00:00 2024\nFrom: sender@example.org\n"
                   f"Subject: number {n}\nMessage-ID: <{n}@test>\n\nbody of {n}\n")
            cmd = ["procmail", "-m", rc]
            if IS_ROOT:
                cmd = ["setpriv", f"--reuid={support.ALICE_UID}", f"--regid={support.ALICE_GID}", "--clear-groups"] + cmd
            p = subprocess.run(cmd, input=msg.encode(), capture_output=True)
            check(p.returncode == 0, f"procmail failed: {p.stderr!r}")
            delivered.append(n)

    retrieved = []
    sessions = {"ok": 0, "in-use": 0}

    def fetch():
        out, _ = env.run(login() + "STAT\r\n")
        count_line = [l for l in out.split("\r\n") if l.startswith("+OK ") and len(l.split()) == 3]
        if "[IN-USE]" in out:
            sessions["in-use"] += 1
            return
        count = int(count_line[0].split()[1]) if count_line else 0
        script = login() + "".join(f"RETR {i}\r\nDELE {i}\r\n" for i in range(1, count + 1)) + "QUIT\r\n"
        out, _ = env.run(script)
        if "[IN-USE]" in out:
            sessions["in-use"] += 1
            return
        numbers = [int(l.split()[2]) for l in out.split("\r\n") if l.startswith("Subject: number ")]
        if out.rstrip().split("\r\n")[-1].startswith("+OK popd signing off"):
            retrieved.extend(numbers)
            sessions["ok"] += 1

    def fetch_loop():
        deadline = time.time() + 600
        while (not stop.is_set() or sessions["ok"] < 30) and time.time() < deadline:
            fetch()
            time.sleep(0.5)  # let deliveries through: procmail sleeps a second on a busy lock

    workers = [threading.Thread(target=deliver, args=(range(k, total + 1, 4),)) for k in range(1, 5)]
    fetcher = threading.Thread(target=fetch_loop)
    for t in workers + [fetcher]:
        t.start()
    for t in workers:
        t.join()
    stop.set()
    fetcher.join()
    out, _ = env.run(login() + "".join(f"RETR {i}\r\n" for i in range(1, total + 1)) + "QUIT\r\n")
    remaining = [int(l.split()[2]) for l in out.split("\r\n") if l.startswith("Subject: number ")]
    seen = retrieved + remaining
    check_equal(len(delivered), total, "deliveries")
    missing = set(range(1, total + 1)) - set(seen)
    duplicated = len(seen) - len(set(seen))
    print(f"     delivered {total} messages with procmail; {sessions['ok']} sessions retrieved and deleted "
          f"{len(retrieved)}, {len(remaining)} left in the mailbox; {sessions['in-use']} sessions got [IN-USE]; "
          f"{len(missing)} lost, {duplicated} duplicated")
    check(not missing, f"lost: {sorted(missing)[:20]}")
    check_equal(duplicated, 0, "duplicated messages")
    check(sessions["ok"] >= 30, "fewer than 30 sessions")


if __name__ == "__main__":
    support.run_tests([v for k, v in list(globals().items()) if k.startswith("test_")], "crash", ONLY,
                  debian_spool=True)
