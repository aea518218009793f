#!/usr/bin/env python3
"""Real mail clients against the real popd under systemd-socket-activate,
each a full round trip that compares what it downloaded with the original
messages byte for byte: Python poplib, curl, fetchmail, mpop, getmail6 and
Perl's Mail::POP3Client; plain, STLS and implicit TLS where the client has
them; keeping mail on the server, deleting it, and fetching only new mail
across sessions after new mail arrived.

Usage: tests/system/clients.py PATH-TO-POPD [TEST-NAME-SUBSTRING]
"""
import os
import poplib
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import support  # noqa: E402
from support import SocketServer, check, check_equal, client_form, from_line, make_message, make_mbox  # noqa: E402
from security import client_context, tls_files  # noqa: E402

COUNT = 12


def lf_form(message):
    """What a client that stores mail with LF line ends keeps of a message:
    the lines as sent, the hidden Status header left out."""
    return client_form(message).replace("\r\n", "\n")


def mailbox(env, count=COUNT, seed=21):
    messages, records = make_mbox(count, seed=seed)
    env.write_mailbox("".join(records).encode())
    return messages, records


def deliver(env, i):
    """New mail, appended as an MDA appends it."""
    import random
    message = make_message(i, random.Random(i))
    with open(env.mailbox(), "ab") as f:
        f.write((from_line(i) + message + "\n").encode())
    return message


def spool_messages(env):
    """The Subject lines left in the spool, in order."""
    return [l for l in open(env.mailbox()).read().splitlines() if l.startswith("Subject: message ")]


def run(cmd, **kw):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kw)
    check(p.returncode == 0, f"{cmd[0]} failed ({p.returncode}): {p.stdout[-1500:]} {p.stderr[-1500:]}")
    return p.stdout


def private_file(path, text):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)  # the clients refuse readable password files
    return path


# --- Python poplib ------------------------------------------------------------

def poplib_round_trip(pop, messages, user="alice", password="secret"):
    pop.user(user)
    pop.pass_(password)
    _, uids, _ = pop.uidl()
    check_equal(len(set(u.split()[1] for u in uids)), len(messages), "distinct UIDL")
    for i, m in enumerate(messages, 1):
        _, lines, octets = pop.retr(i)
        body = b"".join(l + b"\r\n" for l in lines)
        check_equal(body, client_form(m).encode(), f"RETR {i}")
        _, top, _ = pop.top(i, 0)
        header = client_form(m).split("\r\n\r\n")[0]
        check_equal(b"\r\n".join(top).decode(), header + "\r\n", f"TOP {i} 0")
    return uids


def test_poplib_plain_stls_and_implicit_tls(env):
    messages, records = mailbox(env)
    with SocketServer(env, tls_files(env)) as server:
        uids = poplib_round_trip(poplib.POP3("127.0.0.1", server.port, timeout=30), messages)
        pop = poplib.POP3("127.0.0.1", server.port, timeout=30)
        pop.stls(client_context())
        check_equal(poplib_round_trip(pop, messages), uids, "UIDL over STLS")
        pop.dele(2)
        check(pop.quit().startswith(b"+OK"), "QUIT")
    with SocketServer(env, tls_files(env) + ["--tls-implicit"]) as server:
        pop = poplib.POP3_SSL("127.0.0.1", server.port, context=client_context(), timeout=30)
        check_equal(poplib_round_trip(pop, messages[:1] + messages[2:]), uids[:1] + [
            f"{i}".encode() + u[u.index(b" "):] for i, u in enumerate(uids[2:], 2)], "UIDL after DELE 2")
        pop.quit()
    check_equal(open(env.mailbox(), "rb").read(), "".join(records[:1] + records[2:]).encode(), "spool")


# --- curl ---------------------------------------------------------------------

def test_curl(env):
    messages, _ = mailbox(env)
    tls = tls_files(env)
    with SocketServer(env, tls) as plain, SocketServer(env, tls + ["--tls-implicit"]) as implicit:
        urls = [(f"pop3://127.0.0.1:{plain.port}", []),
                (f"pop3://127.0.0.1:{plain.port}", ["--ssl-reqd", "-k"]),
                (f"pop3s://127.0.0.1:{implicit.port}", ["-k"])]
        for url, extra in urls:
            listing = run(["curl", "-sS", "-u", "alice:secret"] + extra + [url + "/"])
            check_equal(len(listing.splitlines()), len(messages), f"LIST through {url} {extra}")
            for i in (1, len(messages)):
                got = subprocess.run(["curl", "-sS", "-u", "alice:secret"] + extra + [f"{url}/{i}"],
                                     capture_output=True, timeout=60).stdout
                check_equal(got, client_form(messages[i - 1]).encode(), f"curl {url}/{i} {extra}")
        # AUTH LOGIN, as Outlook logs in, over STLS.
        got = subprocess.run(["curl", "-sS", "-u", "alice:secret", "--login-options", "AUTH=LOGIN", "--ssl-reqd",
                              "-k", "-v", f"pop3://127.0.0.1:{plain.port}/1"], capture_output=True, timeout=60)
        check_equal(got.stdout, client_form(messages[0]).encode(), "curl AUTH=LOGIN")
        check(b"> AUTH LOGIN" in got.stderr, f"curl did not use AUTH LOGIN: {got.stderr[-1500:]!r}")
        # A wrong password fails as curl reports it: login denied (67).
        p = subprocess.run(["curl", "-sS", "-u", "alice:wrong", f"pop3://127.0.0.1:{plain.port}/1"],
                           capture_output=True, timeout=60)
        check_equal(p.returncode, 67, "curl with a wrong password")


# --- Perl Mail::POP3Client ----------------------------------------------------

PERL = r"""
use strict; use Mail::POP3Client;
my ($port, $dir) = @ARGV;
my $pop = Mail::POP3Client->new(USER => 'alice', PASSWORD => 'secret', HOST => '127.0.0.1', PORT => $port)
  or die "cannot connect";
$pop->Connect() >= 0 or die $pop->Message();
my $count = $pop->Count();
die "login failed: " . $pop->Message() if $count < 0;
for my $i (1 .. $count) {
  open(my $f, '>', "$dir/$i") or die; binmode $f;
  my $text = $pop->HeadAndBody($i); print $f $text; close $f;
}
my @uidl = $pop->Uidl();
print scalar(@uidl) - 1, "\n";
$pop->Delete(1);
$pop->Close();
"""


def test_perl_mail_pop3client(env):
    messages, records = mailbox(env)
    out = env.dir + "/perl"
    os.mkdir(out)
    with SocketServer(env) as server:
        uidl_count = run(["perl", "-e", PERL, str(server.port), out]).strip()
    check_equal(uidl_count, str(len(messages)), "Uidl()")
    for i, m in enumerate(messages, 1):
        # HeadAndBody joins the lines with CRLF (dot-stuffing undone).
        check_equal(open(f"{out}/{i}", "rb").read(), client_form(m).encode(), f"HeadAndBody({i})")
    check_equal(open(env.mailbox(), "rb").read(), "".join(records[1:]).encode(), "spool after Delete(1)")


# --- fetchmail ---------------------------------------------------------------

SAVE = r"""
import os, sys
d = sys.argv[1]
n = len(os.listdir(d)) + 1
with open(os.path.join(d, "%04d" % n), "wb") as f:
    f.write(sys.stdin.buffer.read())
"""


def strip_trace(data, name):
    """A client's own Received header at the top, and nothing else, goes."""
    check(data.startswith(b"Received: "), f"{name} did not add its Received header: {data[:200]!r}")
    end = data.index(b"\n") + 1
    while data[end:end + 1] in (b" ", b"\t"):
        end = data.index(b"\n", end) + 1
    return data[end:]


def saved(directory):
    return [open(os.path.join(directory, n), "rb").read() for n in sorted(os.listdir(directory))]


def fetchmail(home, port, cert, options, user="alice", password="secret"):
    """What fetchmail 6.4 downloads, each message without its Received
    header. It insists on TLS and checks the certificate: STLS, with the
    test's self-signed certificate `cert` as the one it trusts."""
    out = home + "/out"
    os.makedirs(out, exist_ok=True)
    save = private_file(home + "/save.py", SAVE)
    rc = private_file(home + "/rc", f'poll 127.0.0.1 with proto POP3 and port {port} and uidl:\n'
                                    f'  user "{user}" there with password "{password}" is "root" here\n'
                                    f'  options no rewrite sslcertck sslcertfile {cert} '
                                    f'sslcommonname localhost {options}\n'
                                    f'  mda "/usr/bin/python3 {save} {out}"\n')
    p = subprocess.run(["fetchmail", "-f", rc, "--nodetach", "--nosyslog", "-s", "-i", home + "/ids",
                        "--pidfile", home + "/pid"], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, HOME=home))
    check(p.returncode in (0, 1), f"fetchmail: {p.returncode} {p.stdout[-800:]} {p.stderr[-800:]}")
    got = [strip_trace(m, "fetchmail") for m in saved(out)]
    shutil.rmtree(out)
    return got


def test_fetchmail_stls_keep_uidl_and_delete(env):
    messages, _ = mailbox(env)
    home = env.dir + "/fetchmail"
    os.makedirs(home)
    tls = tls_files(env)

    def fetch(port, options):
        return fetchmail(home, port, tls[1], options)

    with SocketServer(env, tls) as server:
        got = fetch(server.port, "keep")
        check_equal(got, [lf_form(m).encode() for m in messages], "fetchmail, keep")
        check_equal(fetch(server.port, "keep"), [], "fetchmail --uidl: nothing new")
        new = deliver(env, 99)
        check_equal(fetch(server.port, "keep"), [lf_form(new).encode()], "fetchmail --uidl: the new message")
        check_equal(len(spool_messages(env)), len(messages) + 1, "kept on the server")
        got = fetch(server.port, "fetchall nokeep")
        check_equal(got, [lf_form(m).encode() for m in messages + [new]], "fetchmail, fetchall nokeep")
    check_equal(spool_messages(env), [], "spool after fetchmail deleted")


# --- mpop ---------------------------------------------------------------------

def maildir(path):
    for sub in ("cur", "new", "tmp"):
        os.makedirs(f"{path}/{sub}", exist_ok=True)
    return path


def test_mpop_only_new_starttls_and_implicit_tls(env):
    messages, _ = mailbox(env)
    home = env.dir + "/mpop"
    box = maildir(home + "/Maildir")
    tls = tls_files(env)

    def fetch(port, settings):
        rc = private_file(home + "/rc", "defaults\n"
                          f"host 127.0.0.1\nuser alice\npassword secret\nuidls_file {home}/uidls\n"
                          f"delivery maildir {box}\nreceived_header off\nonly_new on\n"
                          f"account test\nport {port}\n{settings}\n")
        run(["mpop", "-C", rc, "-q", "test"], env=dict(os.environ, HOME=home))
        got = [open(f"{box}/new/{n}", "rb").read() for n in sorted(os.listdir(f"{box}/new"),
                                                                     key=lambda n: os.stat(f"{box}/new/{n}").st_mtime_ns)]
        for n in os.listdir(f"{box}/new"):
            os.unlink(f"{box}/new/{n}")
        return got

    plain = "tls off\nauth user\nkeep on\n"
    starttls = "tls on\ntls_starttls on\ntls_certcheck off\nauth plain\nkeep on\n"
    implicit = "tls on\ntls_starttls off\ntls_certcheck off\nauth user\n"
    with SocketServer(env, tls) as server, SocketServer(env, tls + ["--tls-implicit"]) as pop3s:
        got = fetch(server.port, plain)
        check_equal(sorted(got), sorted(lf_form(m).encode() for m in messages), "mpop, all")
        check_equal(fetch(server.port, starttls), [], "mpop --only-new over STARTTLS: nothing new")
        new = deliver(env, 98)
        check_equal(fetch(server.port, starttls), [lf_form(new).encode()], "mpop --only-new: the new message")
        check_equal(fetch(pop3s.port, implicit + "keep on\n"), [], "mpop over implicit TLS: nothing new")
        newer = deliver(env, 97)
        check_equal(fetch(pop3s.port, implicit + "keep off\n"), [lf_form(newer).encode()],
                    "mpop over implicit TLS, deleting")
    check_equal(len(spool_messages(env)), 0, "spool after mpop with keep off")


# --- getmail6 -----------------------------------------------------------------

def mboxrd_messages(path):
    """The messages of an mboxrd file: From_ lines dropped, >From unquoted."""
    import re
    data = open(path, "rb").read()
    parts = re.split(rb"(?:^|\n)From [^\n]*\n", data)[1:]
    out = []
    for part in parts:
        if part.endswith(b"\n\n"):
            part = part[:-1]  # the empty line before the next From_ line
        out.append(re.sub(rb"(?m)^>(>*From )", rb"\1", part))
    return out


def test_getmail6_mbox_keep_and_delete(env):
    messages, _ = mailbox(env)
    home = env.dir + "/getmail"
    os.makedirs(home)
    out = home + "/out.mbox"

    # getmail will not deliver as root. Told to deliver as another user, it
    # forks a child per message for that, and now and then hangs forever
    # after the child ended (a zombie child, getmail in a futex wait; seen
    # with Debian 12's getmail6 and popd builds old and new alike): as root,
    # getmail runs as nobody instead, and delivers itself.
    as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if support.IS_ROOT else []

    def fetch(port, options):
        open(out, "w").close()
        private_file(home + "/getmailrc", "[retriever]\ntype = SimplePOP3Retriever\nserver = 127.0.0.1\n"
                     f"port = {port}\nusername = alice\npassword = secret\n\n"
                     f"[destination]\ntype = Mboxrd\npath = {out}\n\n"
                     "[options]\nverbose = 0\nreceived = false\ndelivered_to = false\n"
                     f"message_log_syslog = false\n{options}\n")
        if support.IS_ROOT:
            for path in [home] + [os.path.join(home, f) for f in os.listdir(home)]:
                os.chown(path, 65534, 65534)
        run(as_nobody + ["getmail", "--getmaildir", home, "--rcfile", "getmailrc"])
        return mboxrd_messages(out)

    def as_getmail_keeps(data):
        """getmail writes a Return-Path header of its own, and rewrites the
        message through Python's email package, which keeps every byte but
        empty lines at the very end."""
        data = data[data.index(b"\n") + 1:] if data.startswith(b"Return-Path: ") else data
        return data.rstrip(b"\n")

    def expected(messages):
        return [lf_form(m).encode().rstrip(b"\n") for m in messages]

    with SocketServer(env) as server:
        got = [as_getmail_keeps(m) for m in fetch(server.port, "read_all = false\ndelete = false")]
        check_equal(got, expected(messages), "getmail6, keep")
        check_equal(fetch(server.port, "read_all = false\ndelete = false"), [], "getmail6: nothing new")
        new = deliver(env, 96)
        got = [as_getmail_keeps(m) for m in fetch(server.port, "read_all = false\ndelete = false")]
        check_equal(got, expected([new]), "getmail6: the new message")
        got = fetch(server.port, "read_all = true\ndelete = true")
        check_equal(len(got), len(messages) + 1, "getmail6, read_all and delete")
    check_equal(spool_messages(env), [], "spool after getmail6 deleted")


if __name__ == "__main__":
    support.run_tests([v for k, v in list(globals().items()) if k.startswith("test_")], "clients",
                  sys.argv[2] if len(sys.argv) > 2 else "")
