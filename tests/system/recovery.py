#!/usr/bin/env python3
"""What recovery must not be fooled by, through the real popd binary and the
fault shim (tests/faults/shim.c++), on real file systems where it matters:
a journal left over a mailbox another program rewrote since (before a
step, or before the truncate); journals that can do no harm; a home that
is away, an empty mount point, or unreadable when the next session comes;
a journal on bad sectors; a recovery that cannot make its own journal; an
fsync that fails and loses its data, then a power cut; the disk back on
another device (ext4 on loop devices); a full copy-on-write disk (btrfs).

Usage: tests/system/recovery.py PATH-TO-POPD PATH-TO-LIBFAULTS [TEST-NAME-SUBSTRING]
"""
import errno
import glob
import os
import random
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import crash  # noqa: E402  (reads the command line)
from crash import (MESSAGES, SHIM, Commit, deliver_as_mda, progress_records, restart,  # noqa: E402
                   trace_of)
import support  # noqa: E402
from support import IS_ROOT, check, check_equal, login, make_mbox  # noqa: E402


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


if __name__ == "__main__":
    support.run_tests([v for k, v in list(globals().items()) if k.startswith("test_")], "recovery", crash.ONLY,
                      debian_spool=True)
