#!/usr/bin/env python3
"""Virtual users (issue 33): logins from a passwd-file as Dovecot reads
it, their mail in mbox files and Maildirs under one mail account or the
entry's own uid; the file's trust rules; and popd --hash-password, whose
fields Dovecot's own checker (doveadm pw -t) accepts.

Usage: tests/system/virtual.py PATH-TO-POPD [TEST-NAME-SUBSTRING]
"""
import os
import poplib
import shutil
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from support import *  # noqa: E402,F401,F403  (the helpers every test here uses)
from support import ONLY, run_tests  # noqa: E402

PASSWORD = "pa$$ wörd"
SCHEMES = ("CRYPT", "SHA512-CRYPT", "SHA256-CRYPT", "BLF-CRYPT", "ARGON2I", "ARGON2ID")


def hash_password(*args, text=PASSWORD + "\n"):
    return subprocess.run([POPD, "--hash-password", *args], input=text.encode(), capture_output=True, timeout=30)


def test_hash_password_checked_by_dovecot(env):
    """Each scheme's field, checked by doveadm pw -t against the right and a
    wrong password; a fresh salt each time."""
    if not shutil.which("doveadm"):
        raise AssertionError("doveadm (dovecot-core) is missing")
    for scheme in SCHEMES:
        made = hash_password("--scheme", scheme.lower())
        check(made.returncode == 0, f"{scheme}: {made.stderr!r}")
        field = made.stdout.decode().strip()
        check(field.startswith("{" + scheme + "}"), field)
        check_equal(hash_password("--scheme", scheme).stdout.decode().strip() != field, True, "a fresh salt")
        right = subprocess.run(["doveadm", "pw", "-t", field, "-p", PASSWORD], capture_output=True, timeout=30)
        check(right.returncode == 0 and b"verified" in right.stdout, f"{scheme}: doveadm: {right.stdout!r} {right.stderr!r}")
        wrong = subprocess.run(["doveadm", "pw", "-t", field, "-p", PASSWORD + "x"], capture_output=True, timeout=30)
        check(wrong.returncode != 0, f"{scheme}: doveadm took a wrong password: {wrong.stdout!r}")
    check(hash_password().stdout.startswith(b"{CRYPT}$y$"), "the default scheme: yescrypt")


def test_hash_password_refuses(env):
    """No password, a weak or unknown scheme, --scheme alone: a clear
    message and a failure status, nothing on standard output."""
    for args, text, status in ((("--scheme", "PLAIN"), PASSWORD + "\n", 2), (("--scheme", "MD5-CRYPT"), "x\n", 2),
                               ((), "", 1), ((), "\n", 1), ((), "x" * 5000 + "\n", 1)):
        made = hash_password(*args, text=text)
        check_equal((made.returncode, made.stdout), (status, b""), f"{args} {text[:10]!r}: {made.stderr!r}")
        check(made.stderr.startswith(b"popd: "), made.stderr)
    alone = subprocess.run([POPD, "--scheme", "SHA512-CRYPT"], capture_output=True, timeout=30)
    check_equal(alone.returncode, 2, "--scheme without --hash-password")


class Users:
    """A passwd-file in a root-owned directory, and the vmail tree: each
    virtual user's home under {env.dir}/vmail/DOMAIN/NAME, alice's (the
    --mail-user) unless the entry gives bob's uid."""

    def __init__(self, env, lines):
        self.env, self.dir = env, env.dir + "/etc"
        os.makedirs(self.dir, exist_ok=True)
        os.chmod(self.dir, 0o755)
        self.path = self.dir + "/users"
        self.write(lines)
        self.vmail = env.dir + "/vmail"

    def write(self, lines, mode=0o640):
        with open(self.path, "w") as f:
            f.write("".join(line + "\n" for line in lines))
        os.chmod(self.path, mode)

    def home(self, user, uid=ALICE_UID):
        name, domain = user.split("@")
        path = f"{self.vmail}/{domain}/{name}"
        os.makedirs(path, exist_ok=True)
        for p in (self.vmail, f"{self.vmail}/{domain}"):
            os.chmod(p, 0o755)
        os.chown(path, uid, uid)
        return path

    def args(self, *more):
        return ["--userdb", "passwd-file:" + self.path, "--mail-user", "alice", "--home", self.vmail + "/%d/%n",
                "--mailbox", "%h/mbox", *more]

    def session(self, user, password, script="STAT\r\nQUIT\r\n", args=()):
        return self.env.run(f"USER {user}\r\nPASS {password}\r\n" + script, args=self.args(*args))[0]


def field(scheme, password):
    return hash_password("--scheme", scheme, text=password + "\n").stdout.decode().strip()


def test_virtual_users_read_their_mail(env):
    """ann (no uid: --mail-user's) has an mbox, bob (his own uid) a
    Maildir; each reads their own mail; a wrong password, an unknown user
    and a name that could leave its directory get -ERR [AUTH]."""
    if not IS_ROOT:
        return skip("needs root")
    users = Users(env, [f"ann@example.org:{field('SHA512-CRYPT', 'ann pw')}",
                        f"bob@example.org:{field('ARGON2ID', 'bob pw')}:{BOB_UID}:{BOB_UID}::{env.dir}/vmail/example.org/bob",
                        "# a comment", "",
                        # Names that would leave their directory: in the file, so that only the name rule refuses them.
                        f"../ann@example.org:{field('SHA512-CRYPT', 'ann pw')}",
                        f"ann@example.org/..:{field('SHA512-CRYPT', 'ann pw')}"])
    ann = users.home("ann@example.org")
    with open(ann + "/mbox", "w") as f:
        f.write("".join(make_mbox(3)[1]))
    os.chown(ann + "/mbox", ALICE_UID, ALICE_GID)
    bob = users.home("bob@example.org", BOB_UID)
    for folder in ("cur", "new", "tmp"):
        os.makedirs(f"{bob}/Maildir/{folder}")
    for path in (f"{bob}/Maildir", *(f"{bob}/Maildir/{f}" for f in ("cur", "new", "tmp"))):
        os.chown(path, BOB_UID, BOB_UID)
    with open(f"{bob}/Maildir/new/1700000000.M1P1.host", "wb") as f:
        f.write(b"Subject: for bob\n\nhello bob\n")
    os.chown(f"{bob}/Maildir/new/1700000000.M1P1.host", BOB_UID, BOB_UID)

    out = users.session("ann@example.org", "ann pw", "STAT\r\nRETR 1\r\nQUIT\r\n")
    check("+OK 3 " in out and "signing off" in out, out)
    out = users.session("bob@example.org", "bob pw", "STAT\r\nRETR 1\r\nQUIT\r\n",
                        args=("--mailbox", "maildir:%h/Maildir"))
    check("+OK 1 " in out and "hello bob" in out, out)
    for user, password in (("ann@example.org", "bob pw"), ("nobody@example.org", "ann pw"),
                           ("../ann@example.org", "ann pw"), ("ann@example.org/..", "ann pw"), ("ann", "ann pw")):
        out = users.session(user, password)
        check("-ERR [AUTH]" in out and "+OK 3" not in out, f"{user}: {out}")


def test_real_clients_over_a_socket(env):
    """poplib and fetchmail, through systemd-socket-activate with STLS, as
    two virtual users stored under --mail-user: ann's mail in an mbox
    file, carl's in a Maildir, both at --mailbox %h/mail (popd takes the
    format from what is there). Each downloads byte for byte, keeps mail
    and then gets only what is new, and deletes; the store shows it."""
    if not IS_ROOT:
        return skip("needs root")
    from clients import fetchmail, lf_form, poplib_round_trip
    from security import client_context, tls_files
    users = Users(env, [f"ann@example.org:{field('SHA512-CRYPT', 'ann pw')}",
                        f"carl@example.org:{field('ARGON2ID', 'carl pw')}"])
    ann_messages, ann_records = make_mbox(6, seed=33)
    ann = users.home("ann@example.org") + "/mail"
    with open(ann, "w") as f:
        f.write("".join(ann_records))
    os.chown(ann, ALICE_UID, ALICE_GID)
    carl = users.home("carl@example.org") + "/mail"
    carl_messages = [m.replace("Status: RO\n", "") for m in make_mbox(5, seed=34)[0]]
    for folder in ("", "/cur", "/new", "/tmp"):
        os.makedirs(carl + folder, exist_ok=True)
        os.chown(carl + folder, ALICE_UID, ALICE_GID)

    def deliver_to_carl(i, message):
        path = f"{carl}/new/{1700000000 + i}.M{i}P1.host"
        with open(path, "w") as f:
            f.write(message)
        os.chown(path, ALICE_UID, ALICE_GID)

    for i, m in enumerate(carl_messages):
        deliver_to_carl(i, m)
    tls = tls_files(env)
    home = env.dir + "/fetchmail"
    with SocketServer(env, tls + users.args("--mailbox", "%h/mail")) as server:
        pop = poplib.POP3("127.0.0.1", server.port, timeout=30)
        poplib_round_trip(pop, ann_messages, "ann@example.org", "ann pw")
        pop.dele(1)
        check(pop.quit().startswith(b"+OK"), "ann's QUIT")
        check_equal(open(ann).read(), "".join(ann_records[1:]), "ann's mbox after DELE 1")
        pop = poplib.POP3("127.0.0.1", server.port, timeout=30)
        pop.stls(client_context())
        poplib_round_trip(pop, carl_messages, "carl@example.org", "carl pw")
        pop.dele(2)
        check(pop.quit().startswith(b"+OK"), "carl's QUIT")
        check_equal(sorted(os.listdir(carl + "/new")) + os.listdir(carl + "/cur"),
                    [f"{1700000000 + i}.M{i}P1.host" for i in (0, 2, 3, 4)], "carl's Maildir after DELE 2")
        pop = poplib.POP3("127.0.0.1", server.port, timeout=30)
        pop.user("carl@example.org")
        try:
            pop.pass_("ann pw")
            raise AssertionError("carl got in with ann's password")
        except poplib.error_proto as e:
            check(b"[AUTH]" in e.args[0], e.args[0])

        def fetch(user, password, options):
            return fetchmail(home + "/" + user, server.port, tls[1], options, user, password)

        os.makedirs(home)
        check_equal(fetch("ann@example.org", "ann pw", "keep"), [lf_form(m).encode() for m in ann_messages[1:]],
                    "fetchmail, ann, keep")
        check_equal(fetch("ann@example.org", "ann pw", "keep"), [], "fetchmail, ann: nothing new")
        new = make_mbox(8, seed=35)
        with open(ann, "a") as f:
            f.write(new[1][7])
        check_equal(fetch("ann@example.org", "ann pw", "keep"), [lf_form(new[0][7]).encode()],
                    "fetchmail, ann: the new message")
        deliver_to_carl(9, "Subject: new for carl\n\nhello\n")
        got = fetch("carl@example.org", "carl pw", "fetchall nokeep")
        check_equal(got, [lf_form(m).encode() for m in carl_messages[:1] + carl_messages[2:]] +
                    [b"Subject: new for carl\n\nhello\n"], "fetchmail, carl, fetchall nokeep")
    check_equal(os.listdir(carl + "/new") + os.listdir(carl + "/cur"), [], "carl's Maildir after fetchmail")
    check_equal(open(ann).read().count("\nSubject: message "), 6, "ann's mail kept")


def test_the_file_must_be_roots_alone(env):
    """A file others can write, a missing file, a malformed entry, an entry
    without uid or home, an entry with uid 0: -ERR and a log line, never a
    session (and never one as root)."""
    if not IS_ROOT:
        return skip("needs root")
    good = field("SHA512-CRYPT", "pw")
    users = Users(env, [f"ann@example.org:{good}", "bad@example.org", f"root@example.org:{good}:0:0::/root",
                        f"sys@example.org:{good}:5:5::/tmp", f"wheel@example.org:{good}:{ALICE_UID}:0::/tmp"])
    users.home("ann@example.org")
    check("+OK 0 0" in users.session("ann@example.org", "pw"), "ann's login")
    check("-ERR [AUTH]" in users.session("bad@example.org", "pw"), "a malformed entry: as an unknown user")
    for user, args in (("root@example.org", ("--first-valid-uid", "1")), ("sys@example.org", ()),
                       ("wheel@example.org", ())):
        out = users.session(user, "pw", args=args)
        check("-ERR [AUTH]" in out and "+OK 0" not in out, f"{user}: {out}")
    users.write([f"ann@example.org:{good}"], mode=0o646)
    check("-ERR [SYS/TEMP]" in users.session("ann@example.org", "pw"), "a file others can write")
    os.unlink(users.path)
    check("-ERR [SYS/TEMP]" in users.session("ann@example.org", "pw"), "a missing file")
    users.write([f"ann@example.org:{good}"])
    out = env.run("USER ann@example.org\r\nPASS pw\r\nQUIT\r\n",
                  args=["--userdb", "passwd-file:" + users.path, "--mailbox", "%h/mbox"])[0]
    check("-ERR [SYS/TEMP]" in out, f"no uid and no --mail-user: {out}")


def test_no_groups_but_the_accounts_gid(env):
    """A virtual user named like a member of a system group is not in it:
    a mailbox only that group may reach stays out of reach."""
    if not IS_ROOT:
        return skip("needs root")
    users = Users(env, [f"ann:{field('SHA512-CRYPT', 'pw')}"])
    with open(env.dir + "/group", "a") as f:
        f.write("secret:x:4242:ann\n")
    secret = env.dir + "/secret"
    os.makedirs(secret)
    os.chown(secret, 0, 4242)
    os.chmod(secret, 0o770)
    with open(secret + "/mbox", "w") as f:
        f.write("".join(make_mbox(2)[1]))
    os.chown(secret + "/mbox", ALICE_UID, ALICE_GID)
    out = users.session("ann", "pw", args=("--home", secret))
    check("+OK Send your password" in out and "-ERR [SYS/" in out and "+OK 2 " not in out, out)
    users.write([f"ann:{field('SHA512-CRYPT', 'pw')}:{ALICE_UID}:4242"])  # the control: the group's own gid
    out = users.session("ann", "pw", args=("--home", secret))
    check("+OK 2 " in out, f"with the entry's gid 4242: {out}")


def test_weak_schemes_only_when_allowed(env):
    if not IS_ROOT:
        return skip("needs root")
    users = Users(env, ["ann@example.org:{PLAIN}pw", "bob@example.org:{SSHA}QPrGVAKRRYQ/IoRrg04toZg59FFfoovO"])
    users.home("ann@example.org")
    users.home("bob@example.org")
    check("-ERR [AUTH]" in users.session("ann@example.org", "pw"), "PLAIN without --allow-weak-schemes")
    check("+OK 0 0" in users.session("ann@example.org", "pw", args=("--allow-weak-schemes",)), "PLAIN allowed")
    check("+OK 0 0" in users.session("bob@example.org", "pa$$ word", args=("--allow-weak-schemes",)), "SSHA allowed")


def test_one_file_per_domain(env):
    """PATH with %d: the file of the login's domain; a name without one
    matches no file."""
    if not IS_ROOT:
        return skip("needs root")
    users = Users(env, [])
    for domain, password in (("one.example", "pw1"), ("two.example", "pw2")):
        with open(f"{users.dir}/{domain}", "w") as f:
            f.write(f"ann@{domain}:{field('SHA256-CRYPT', password)}\n")
        os.chmod(f"{users.dir}/{domain}", 0o600)
        users.home(f"ann@{domain}")
    users.path = users.dir + "/%d"
    check("+OK 0 0" in users.session("ann@one.example", "pw1"), "one.example")
    check("+OK 0 0" in users.session("ann@two.example", "pw2"), "two.example")
    check("-ERR [AUTH]" in users.session("ann@two.example", "pw1"), "another domain's password")
    # A domain not served, or none: an unknown user's answer, not a
    # missing file's, so that a client cannot list the domains.
    check("-ERR [AUTH]" in users.session("ann", "pw1"), "no domain")
    check("-ERR [AUTH]" in users.session("ann@three.example", "pw1"), "a domain without a file")
    # %d in a directory's name: a domain without a directory, the same.
    os.makedirs(f"{users.dir}/one.example.d")
    shutil.copy(f"{users.dir}/one.example", f"{users.dir}/one.example.d/users")
    users.path = users.dir + "/%d.d/users"
    check("+OK 0 0" in users.session("ann@one.example", "pw1"), "one.example.d/users")
    check("-ERR [AUTH]" in users.session("ann@three.example", "pw1"), "a domain without a directory")


def test_unknown_users_cost_what_known_ones_do(env):
    """With no failure delay to hide it, a wrong password for a known user
    and any password for an unknown one are answered within 50 ms of each
    other (medians of 10), with Argon2id hashes that take far longer than
    that to check. `make check -j` runs other tests beside this one: a
    round the machine's load skewed is measured again, up to three times;
    a leak (no dummy hash: the whole hash's time) fails every round."""
    if not IS_ROOT:
        return skip("needs root")
    users = Users(env, [f"user{i}@example.org:{field('ARGON2ID', 'pw')}" for i in range(5)])

    def timed(user):
        start = time.perf_counter()
        out = users.session(user, "wrong", args=("--failure-delay", "0"))
        check("-ERR [AUTH]" in out, out)
        return (time.perf_counter() - start) * 1000

    timed("user1@example.org")  # once unmeasured: libraries and files into the cache
    rounds = []
    for _ in range(3):
        times = {"user1@example.org": [], "nobody@example.org": []}
        for _ in range(10):  # alternating, so that the machine's drift falls on both
            for user in times:
                times[user].append(timed(user))
        known, unknown = (sorted(times[user])[5] for user in times)
        rounds.append(f"known {known:.0f} ms, unknown {unknown:.0f} ms")
        if abs(known - unknown) < 50:
            break
    check(abs(known - unknown) < 50, "; ".join(rounds))
    print(f"     wrong password, medians of 10: {'; then '.join(rounds)}")


DOVECOT = """passdb {{
  driver = passwd-file
  args = {users}
}}
userdb {{
  driver = passwd-file
  args = {users}
}}
mail_location = maildir:~/Maildir
first_valid_uid = 1000
"""


class POP3From(poplib.POP3):
    """From an address of its own: Dovecot's penalty for failed logins
    grows per client address, to 15 s."""
    source = 0

    def _create_socket(self, timeout):
        POP3From.source += 1
        return socket.create_connection((self.host, self.port), timeout,
                                        source_address=(f"127.0.{POP3From.source // 250}.{POP3From.source % 250 + 2}", 0))


def pop_login(port, user, password):
    """'+' if the server let the user in, '-' if not."""
    pop = POP3From("127.0.0.1", port, timeout=30)
    try:
        pop.user(user)
        pop.pass_(password)
        pop.quit()
        return "+"
    except poplib.error_proto:
        return "-"


def test_one_file_two_servers(env):
    """The same passwd-file, Dovecot's passdb and userdb and popd's
    --userdb: every entry, in every scheme both know (made by doveadm pw,
    openssl passwd, mkpasswd and popd --hash-password), accepted with its
    password and refused with another by both alike; unknown users, a
    wrong domain and one file per domain too. Weak schemes, which popd
    takes only with --allow-weak-schemes, are compared with it."""
    if not IS_ROOT or not shutil.which("doveadm"):
        return skip("needs root and Dovecot")
    home = env.dir + "/home/alice"
    os.chmod(env.dir, 0o755)
    os.chmod(env.dir + "/home", 0o755)
    for folder in ("", "/cur", "/new", "/tmp"):
        os.makedirs(home + "/Maildir" + folder, exist_ok=True)
        os.chown(home + "/Maildir" + folder, ALICE_UID, ALICE_GID)
    tail = f":{ALICE_UID}:{ALICE_GID}::{home}"
    made = {}
    for scheme in ("SHA512-CRYPT", "SHA256-CRYPT", "BLF-CRYPT", "CRYPT", "ARGON2I", "ARGON2ID", "PLAIN", "SSHA",
                   "SHA256", "PLAIN-MD5", "MD5-CRYPT"):
        made["doveadm-" + scheme.lower()] = subprocess.run(["doveadm", "pw", "-s", scheme, "-p", "pw " + scheme],
                                                           capture_output=True, text=True).stdout.strip()
    made["openssl-6"] = subprocess.run(["openssl", "passwd", "-6", "pw openssl"], capture_output=True,
                                       text=True).stdout.strip()
    if shutil.which("mkpasswd"):
        made["mkpasswd-yescrypt"] = subprocess.run(["mkpasswd", "-m", "yescrypt", "pw mkpasswd"], capture_output=True,
                                                   text=True).stdout.strip()
    for scheme in SCHEMES:
        made["popd-" + scheme.lower()] = field(scheme, "pw popd " + scheme)
    passwords = {name: "pw " + name.split("-", 1)[1].upper() if name.startswith("doveadm") else
                 "pw openssl" if name.startswith("openssl") else "pw mkpasswd" if name.startswith("mkpasswd") else
                 "pw popd " + name.split("-", 1)[1].upper() for name in made}
    etc = env.dir + "/etc"
    os.makedirs(etc)
    os.chmod(etc, 0o755)
    users = f"{etc}/users"
    with open(users, "w") as f:
        f.write("# one entry per kind of hash\n")
        for name, value in made.items():
            f.write(f"{name}@example.org:{value}{tail}\n")
    for domain in ("one.example", "two.example"):
        with open(f"{etc}/{domain}", "w") as f:
            f.write(f"ann@{domain}:{field('SHA512-CRYPT', 'pw ' + domain)}{tail}\n")
    for path in (users, f"{etc}/one.example", f"{etc}/two.example"):
        shutil.chown(path, "root", "dovecot")
        os.chmod(path, 0o640)

    results = {}
    for file_arg, cases in (
            (users, [(f"{name}@example.org", password) for name, password in passwords.items()] +
             [(f"{name}@example.org", "wrong") for name in passwords] +
             [("nobody@example.org", "pw"), ("openssl-6@example.net", "pw openssl"), ("openssl-6", "pw openssl"),
              ("OpenSSL-6@Example.ORG", "pw openssl")]),
            (etc + "/%d", [("ann@one.example", "pw one.example"), ("ann@two.example", "pw two.example"),
                           ("ann@two.example", "pw one.example"), ("ann@three.example", "pw"), ("ann", "pw")])):
        work = env.dir + "/dovecot-" + str(len(results))
        with DovecotServer(work, DOVECOT.format(users=file_arg)) as dovecot:
            port = dovecot.port
            for user, password in cases:
                popd = env.run(f"USER {user}\r\nPASS {password}\r\nQUIT\r\n",
                               args=["--userdb", "passwd-file:" + file_arg, "--mailbox", "%h/Maildir/",
                                     "--allow-weak-schemes"])[0]
                answers = popd.split("\r\n")  # the greeting, USER's answer, PASS's
                results[(user, password)] = (pop_login(port, user, password), answers[2][:1])
    differ = {case: got for case, got in results.items() if got[0] != got[1]}
    check_equal(differ, {}, "logins Dovecot and popd judged differently (dovecot, popd)")
    accepted = sum(1 for got in results.values() if got[0] == "+")
    check(accepted == len(passwords) + 3, f"{accepted} accepted: {results}")
    print(f"     {len(results)} logins, {accepted} accepted: Dovecot and popd alike, "
          f"{len(made)} kinds of hash ({', '.join(made)})")


if __name__ == "__main__":
    run_tests([v for k, v in list(globals().items()) if k.startswith("test_")], "virtual", ONLY)
