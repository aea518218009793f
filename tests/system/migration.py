#!/usr/bin/env python3
"""Switching to popd keeps the unique-ids another server gave (issue:
--uidl-scheme), shown against the real servers where they run here (as
root, loopback only):

- popa3d 1.0.3, Debian's binary (apt-get download + dpkg -x; never
  installed, it conflicts with Dovecot): popd --uidl-scheme popa3d lists
  the same ids on plain mailboxes, messages without Received or
  Message-ID, folded headers and identical copies (where popa3d repeats an
  id, popd keeps it for the first copy only);
- Dovecot (Debian's, its own instance): once it has written X-UID and
  X-IMAPbase, --uidl-scheme dovecot lists its ids; new mail gets popd ids;
  the ids hold after DELE 1 + QUIT (which removes the X-IMAPbase header);
- GNU Mailutils pop3d writes X-UIDL; --uidl-scheme x-uidl lists its ids;
- UW IMAP: a mailbox as UW writes it (pseudo-message with X-IMAP, or
  X-IMAPbase in the first message) gives ipop3d's "%08lx%08lx" ids;
- and for every scheme, `popd --list-uids` prints what a session's UIDL
  says.

Usage: tests/system/migration.py PATH-TO-POPD [TEST-NAME-SUBSTRING]
"""
import glob
import os
import poplib
import pwd
import random
import re
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import support  # noqa: E402
from support import IS_ROOT, POPD, check, check_equal, from_line, login, make_mbox  # noqa: E402
from support import skip  # noqa: E402
from support import DovecotServer  # noqa: E402

from support import TOP  # noqa: E402
PEERS = f"{TOP}/build/peers"
USER, PASSWORD = "popd-migrate", "migrate-Pw-1"
SPOOL = f"/var/mail/{USER}"
SCHEMES = ("popd", "popa3d", "dovecot", "uw-imap", "x-uidl")


def account():
    """A real account: the peers check its password through PAM or shadow."""
    try:
        pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", USER], check=True)
    subprocess.run(["chpasswd"], input=f"{USER}:{PASSWORD}\n".encode(), check=True)
    return pwd.getpwnam(USER)


def write_spool(data):
    user = account()
    with open(SPOOL, "wb") as f:
        f.write(data)
    os.chown(SPOOL, user.pw_uid, 8)
    os.chmod(SPOOL, 0o660)


def listing(text):
    """The ids of a UIDL listing (or --list-uids output), in order."""
    return [line.split()[1] for line in text.replace("\r", "").splitlines() if re.match(r"^\d+ \S+$", line)]


def list_uids(path, scheme, env=None):
    """popd --list-uids; with `env`, seeing the test's users (nss_wrapper)."""
    variables = dict(os.environ, **env.variables()) if env else None
    p = subprocess.run([POPD, "--list-uids", path, "--uidl-scheme", scheme], capture_output=True, text=True,
                       timeout=60, env=variables)
    check(p.returncode == 0, p.stderr)
    return listing(p.stdout)


def session_uids(env, data, scheme):
    """UIDL from a popd session on these bytes (the test's own account)."""
    env.write_mailbox(data)
    out, _ = env.run(login() + "UIDL\r\nQUIT\r\n", args=["--uidl-scheme", scheme])
    check("+OK unique-id listing follows" in out, out)
    return listing(out[out.index("unique-id listing"):])


def popd_shaped(uid):
    return re.fullmatch(r"[0-9a-f]{32}(-\d+)?", uid) is not None


# --- popa3d --------------------------------------------------------------------

def popa3d():
    """Debian's popa3d, unpacked (not installed), with what it needs: its
    account, its chroot directory and its PAM service."""
    binary = f"{PEERS}/popa3d/usr/sbin/popa3d"
    if not os.path.exists(binary):
        os.makedirs(PEERS, exist_ok=True)
        subprocess.run(["apt-get", "download", "popa3d"], cwd=PEERS, check=True, capture_output=True)
        deb = glob.glob(f"{PEERS}/popa3d_*.deb")[0]
        subprocess.run(["dpkg", "-x", deb, f"{PEERS}/popa3d"], check=True)
    try:
        pwd.getpwnam("popa3d")
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent", "--shell",
                        "/usr/sbin/nologin", "popa3d"], check=True)
    os.makedirs("/var/lib/popa3d", mode=0o755, exist_ok=True)
    if not os.path.exists("/etc/pam.d/popa3d"):
        shutil.copy(f"{PEERS}/popa3d/etc/pam.d/popa3d", "/etc/pam.d/popa3d")
    return binary


def popa3d_uids(binary, data):
    write_spool(data)
    p = subprocess.run([binary], input=f"USER {USER}\r\nPASS {PASSWORD}\r\nUIDL\r\nQUIT\r\n".encode(),
                       capture_output=True, timeout=60)
    out = p.stdout.decode()
    check(out.count("+OK") >= 4, f"popa3d: {out!r}")
    return listing(out)


def popa3d_mailboxes():
    rng = random.Random(5)
    plain = "".join(make_mbox(25, seed=51)[1])
    received = "".join(
        from_line(i) + f"Received: from relay{i % 3}.example.org\n\tby mx.example.org; Mon, 1 Jan 2024\n"
        f"Received: from client{i}\n\tby relay{i % 3}\nDate: Mon, {i} Jan 2024\nMessage-ID: <{i}@x>\n"
        f"Subject: s{i}\nDelivered-To: u{i % 2}@example.org\nX-Delivery-ID: {rng.randrange(10**6)}\n"
        f"x-delivery-id: lower {i}\nStatus: RO\n\nbody {i}\n\n" for i in range(12))
    bare = "".join(from_line(i) + f"Subject: {i % 3}\nFrom: someone\n\nbody {i}\n\n" for i in range(9))
    one = from_line(1) + "Received: from a\nMessage-ID: <same@x>\nSubject: again\n\nthe same\n\n"
    copies = one * 3 + from_line(2) + "Subject: other\n\nx\n\n" + one
    return {"plain": plain, "Received, Date, Message-ID, folded": received,
            "no Received or Message-ID": bare, "identical copies": copies}


def test_popa3d(env):
    if not IS_ROOT:
        return skip("popa3d runs as root")
    binary = popa3d()
    try:
        for name, text in popa3d_mailboxes().items():
            data = text.encode()
            theirs = popa3d_uids(binary, data)
            ours = list_uids(SPOOL, "popa3d")
            check_equal(len(ours), len(theirs), f"{name}: message count")
            for i, (mine, its) in enumerate(zip(ours, theirs)):
                if its in theirs[:i]:  # popa3d repeats an id: the first copy keeps it
                    check(mine.startswith(its + "-") and mine not in theirs, f"{name}: message {i + 1}: {mine}")
                else:
                    check_equal(mine, its, f"{name}: message {i + 1}")
            check_equal(session_uids(env, data, "popa3d"), ours, f"{name}: a session's UIDL")
            repeats = len(theirs) - len(set(theirs))
            print(f"     popa3d, {name}: {len(theirs)} ids the same"
                  + (f" ({repeats} repeated by popa3d, distinct in popd)" if repeats else ""))
        # A CRLF spool: popa3d takes only LF-LF before "From " as a
        # separator, so it sees one message; popd sees them all.
        crlf = popa3d_mailboxes()["plain"].replace("\n", "\r\n").encode()
        check_equal(len(popa3d_uids(binary, crlf)), 1, "popa3d on a CRLF spool")
        print("     popa3d, CRLF spool: popa3d reads it as one message, so its ids cannot be matched")
    finally:
        os.path.exists(SPOOL) and os.unlink(SPOOL)


# --- Dovecot ---------------------------------------------------------------------

DOVECOT = """passdb {{
  driver = passwd-file
  args = {work}/passwd
}}
userdb {{
  driver = passwd
}}
mail_location = mbox:{work}/mail/%u:INBOX=/var/mail/%u:INDEX={work}/index/%u
mail_privileged_group = mail
# Write X-UID and X-IMAPbase at once, not only when something else changes.
mbox_lazy_writes = no
pop3_uidl_format = %08Xu%08Xv
"""


def dovecot_uids(work):
    for sub in ("mail", "index"):
        os.makedirs(f"{work}/{sub}")
        os.chmod(f"{work}/{sub}", 0o1777)
    with open(f"{work}/passwd", "w") as f:
        f.write(f"{USER}:{{PLAIN}}{PASSWORD}\n")
    with DovecotServer(work, DOVECOT.format(work=work)) as dovecot:
        pop = poplib.POP3("127.0.0.1", dovecot.port, timeout=30)
        pop.user(USER)
        pop.pass_(PASSWORD)
        ids = listing("\n".join(l.decode() for l in pop.uidl()[1]))
        pop.quit()
        return ids


def test_dovecot(env):
    if not IS_ROOT or not shutil.which("dovecot"):
        return skip("needs root and Dovecot")
    messages, records = make_mbox(10, seed=52)
    write_spool("".join(records).encode())
    try:
        theirs = dovecot_uids(env.dir + "/dovecot")
        data = open(SPOOL, "rb").read()
    finally:
        os.unlink(SPOOL)
    check(b"X-IMAPbase: " in data and data.count(b"X-UID: ") == 10, "Dovecot wrote no X-UID headers")
    check_equal(len(theirs), 10, "Dovecot's listing")
    check_equal(session_uids(env, data, "dovecot"), theirs, "popd's UIDL, dovecot scheme")
    path = env.write_mailbox(data)
    check_equal(list_uids(path, "dovecot"), theirs, "popd --list-uids, dovecot scheme")
    # New mail has no X-UID: popd's own id, the others unchanged.
    with open(path, "ab") as f:
        f.write((from_line(99) + "Subject: after the switch\n\nnew\n\n").encode())
    out, _ = env.run(login() + "UIDL\r\nDELE 1\r\nQUIT\r\n", args=["--uidl-scheme", "dovecot"])
    now = listing(out[out.index("unique-id listing"):])
    check_equal(now[:10], theirs, "Dovecot's ids after new mail")
    check(popd_shaped(now[10]) and now[10] not in theirs, f"the new message's id {now[10]}")
    # Message 1 held X-IMAPbase; it is gone, its UIDVALIDITY kept aside.
    check(b"X-IMAPbase" not in open(path, "rb").read(), "X-IMAPbase still in the spool")
    check(os.path.exists(env.dir + "/home/alice/.popd-uidvalidity"), "no .popd-uidvalidity")
    out, _ = env.run(login() + "UIDL\r\nQUIT\r\n", args=["--uidl-scheme", "dovecot", "--index", env.dir + "/none"])
    check_equal(listing(out[out.index("unique-id listing"):]), now[1:], "ids after DELE 1 + QUIT, no index")
    check_equal(list_uids(path, "dovecot", env), now[1:], "--list-uids after DELE 1: the owner's kept UIDVALIDITY")
    print(f"     Dovecot: its {len(theirs)} ids listed by popd; new mail gets popd's own; the same ids after "
          "DELE 1 + QUIT removed X-IMAPbase")


# --- GNU Mailutils -------------------------------------------------------------

def test_mailutils_x_uidl(env):
    if not IS_ROOT or not shutil.which("pop3d"):
        return skip("needs root and GNU Mailutils' pop3d")
    messages, records = make_mbox(8, seed=53)
    account()
    write_spool("".join(records).encode())
    script = f"USER {USER}\r\nPASS {PASSWORD}\r\nUIDL\r\nQUIT\r\n".encode()
    try:
        first = subprocess.run(["pop3d", "--inetd", "--no-config"], input=script, capture_output=True, timeout=60)
        second = subprocess.run(["pop3d", "--inetd", "--no-config"], input=script, capture_output=True, timeout=60)
        data = open(SPOOL, "rb").read()
    finally:
        os.unlink(SPOOL)
    theirs = listing(second.stdout.decode())
    check_equal(listing(first.stdout.decode()), theirs, "Mailutils' own ids across sessions")
    check_equal(data.count(b"\nX-UIDL: "), 8, "Mailutils wrote no X-UIDL headers")
    check_equal(session_uids(env, data, "x-uidl"), theirs, "popd's UIDL, x-uidl scheme")
    check_equal(list_uids(env.write_mailbox(data), "x-uidl"), theirs, "popd --list-uids, x-uidl scheme")
    print(f"     GNU Mailutils pop3d: its {len(theirs)} X-UIDL ids listed by popd")


# --- UW IMAP ---------------------------------------------------------------------

def test_uw_imap(env):
    """ipop3d's UIDL is "%08lx%08lx" of the mailbox's UIDVALIDITY and the
    message's UID; UW's mbox driver keeps the UIDVALIDITY in X-IMAP of its
    pseudo-message, or in X-IMAPbase of the first message, and each UID in
    X-UID (imap-2007f, src/osdep/unix/unix.c)."""
    pseudo = (from_line(0) + "Date: Mon, 1 Jan 2024 00:00:00 +0000\nFrom: Mail System Internal Data "
              "<MAILER-DAEMON@example.org>\nSubject: DON'T DELETE THIS MESSAGE -- FOLDER INTERNAL DATA\n"
              "Message-ID: <1@example.org>\nX-IMAP: 1234567890 0000000003\nStatus: RO\n\n"
              "This text is part of the internal format of your mail folder, and is not\na real message.\n\n")
    messages = "".join(from_line(i) + f"Subject: {i}\nStatus: RO\nX-UID: {i}\n\nbody\n\n" for i in (1, 2, 3))
    base = messages.replace("Subject: 1\n", "Subject: 1\nX-IMAPbase: 1234567890 0000000003\n", 1)
    expected = ["499602d200000001", "499602d200000002", "499602d200000003"]
    for name, data in (("pseudo-message", pseudo + messages), ("X-IMAPbase", base)):
        check_equal(session_uids(env, data.encode(), "uw-imap"), expected, f"UW ids, {name}")
        check_equal(list_uids(env.mailbox(), "uw-imap"), expected, f"--list-uids, UW ids, {name}")
    print("     UW IMAP: ipop3d's ids from X-IMAP (pseudo-message) and from X-IMAPbase")


def test_list_uids_is_the_sessions_uidl(env):
    """Every scheme, one mailbox that has a bit of everything."""
    records = make_mbox(12, seed=54)[1]
    records[0] = records[0].replace("Subject:", "X-IMAPbase: 42 13\nSubject:", 1)
    text = "".join(r.replace("Subject:", f"X-UID: {i + 1}\nX-UIDL: q{i % 5}\nReceived: r{i % 4}\nSubject:", 1)
                   for i, r in enumerate(records))
    text += records[3] + records[3]  # identical copies without a few of the headers
    for scheme in SCHEMES:
        ids = session_uids(env, text.encode(), scheme)
        check_equal(len(set(ids)), len(ids), f"{scheme}: distinct ids")
        check_equal(list_uids(env.mailbox(), scheme), ids, f"{scheme}: --list-uids and UIDL")
    # Read-only: the spool is not touched, and a reader needs no lock.
    before = support.stat_of(env.mailbox())
    list_uids(env.mailbox(), "dovecot")
    check_equal(support.stat_of(env.mailbox()), before, "--list-uids wrote to the spool")


if __name__ == "__main__":
    support.run_tests([v for k, v in list(globals().items()) if k.startswith("test_")], "migration",
                  sys.argv[2] if len(sys.argv) > 2 else "")
