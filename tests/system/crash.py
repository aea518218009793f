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
- what recovery must not be fooled by: in tests/system/recovery.py.
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
