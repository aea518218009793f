#!/usr/bin/env python3
"""TLS and SASL through the real popd binary: STLS with openssl s_client and
Python's poplib, implicit TLS (POP3S), the STARTTLS command-injection test
(CVE-2011-0411), --require-tls, AUTH PLAIN in both forms.

Usage: tests/system/security.py PATH-TO-POPD [TEST-NAME-SUBSTRING]
"""
import base64
import os
import poplib
import socket
import ssl
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import support  # noqa: E402
from support import IS_ROOT, SocketServer, check, check_equal, client_form, login, make_mbox, run_tests  # noqa: E402


def tls_files(env):
    """A self-signed certificate, and its key readable by root only when
    run as root: popd must read it before it drops privileges."""
    cert, key = env.dir + "/cert.pem", env.dir + "/key.pem"
    if not os.path.exists(cert):
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
                        "-days", "2", "-keyout", key, "-out", cert], check=True, capture_output=True)
        os.chmod(key, 0o600)
        os.chmod(cert, 0o644)
    return ["--tls-cert", cert, "--tls-key", key]


def client_context():
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def plain(raw):
    return base64.b64encode(raw).decode()


def test_stls_with_poplib(env):
    messages, records = make_mbox(3)
    path = env.write_mailbox("".join(records).encode())
    with SocketServer(env, tls_files(env)) as server:
        pop = poplib.POP3("127.0.0.1", server.port, timeout=20)
        check("STLS" in pop.capa(), "CAPA offers STLS")
        pop.stls(client_context())
        check(pop.sock.version() in ("TLSv1.2", "TLSv1.3"), pop.sock.version())
        check("STLS" not in pop.capa(), "CAPA still offers STLS after STLS")
        try:
            pop._shortcmd("STLS")
            check(False, "a second STLS was accepted")
        except poplib.error_proto as e:
            check(str(e).startswith("b'-ERR"), str(e))
        pop.user("alice")
        pop.pass_("secret")
        _, lines, _ = pop.retr(2)
        check_equal(b"".join(l + b"\r\n" for l in lines), client_form(messages[1]).encode(), "RETR over TLS")
        pop.dele(1)
        pop.quit()
    check_equal(open(path, "rb").read(), "".join(records[1:]).encode(), "commit over TLS")


def test_stls_with_openssl_s_client(env):
    messages, records = make_mbox(3)
    env.write_mailbox("".join(records).encode())
    size = sum(len(client_form(m)) for m in messages)
    with SocketServer(env, tls_files(env)) as server:
        p = subprocess.run(["openssl", "s_client", "-starttls", "pop3", "-connect", f"127.0.0.1:{server.port}",
                            "-quiet", "-crlf"], input=b"USER alice\nPASS secret\nSTAT\nQUIT\n",
                           capture_output=True, timeout=30)
    out = p.stdout.decode()
    check(f"+OK 3 {size}\r\n" in out, out + p.stderr.decode()[-500:])
    check(out.rstrip().endswith("(0 messages deleted)"), out)


def test_implicit_tls(env):
    messages, records = make_mbox(2)
    env.write_mailbox("".join(records).encode())
    with SocketServer(env, tls_files(env) + ["--tls-implicit"]) as server:
        pop = poplib.POP3_SSL("127.0.0.1", server.port, context=client_context(), timeout=20)
        check(pop.getwelcome().startswith(b"+OK"), "greeting over TLS")
        check("STLS" not in pop.capa(), "STLS offered on implicit TLS")
        pop.user("alice")
        pop.pass_("secret")
        check_equal(pop.stat()[0], 2, "STAT over implicit TLS")
        pop.quit()
        # A plaintext client gets no greeting.
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
            s.sendall(b"CAPA\r\n")
            try:
                data = s.recv(100)
            except (ConnectionResetError, socket.timeout):
                data = b""
            check(not data.startswith(b"+OK"), "plaintext spoken on the POP3S port")


def test_tls_half_close(env):
    """A client that sends its commands and a TLS close_notify at once, then
    reads: the relay passes the commands on and the replies back."""
    messages, records = make_mbox(2)
    env.write_mailbox("".join(records).encode())
    with SocketServer(env, tls_files(env) + ["--tls-implicit"]) as server:
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=20)
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = client_context().wrap_bio(incoming, outgoing)

        def pump(step):
            while True:
                try:
                    return step()
                except ssl.SSLWantReadError:
                    if incoming.eof:
                        raise ssl.SSLEOFError("the server closed the connection")
                    sock.sendall(outgoing.read())
                    data = sock.recv(65536)
                    if data:
                        incoming.write(data)
                    else:
                        incoming.write_eof()

        pump(tls.do_handshake)
        tls.write((login() + "STAT\r\nQUIT\r\n").encode())
        try:
            tls.unwrap()  # close_notify; the server's comes later
        except ssl.SSLWantReadError:
            pass
        sock.sendall(outgoing.read())
        received = b""
        while not received.endswith(b"messages deleted)\r\n"):
            try:
                chunk = pump(lambda: tls.read(65536))
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                break
            if not chunk:
                break
            received += chunk
        check(received.endswith(b"+OK popd signing off (0 messages deleted)\r\n"),
              f"replies lost after the client's close_notify: {received!r}")


def test_tls_versions(env):
    env.write_mailbox(b"")
    with SocketServer(env, tls_files(env) + ["--tls-implicit"]) as server:
        for version, ok in (("-tls1_1", False), ("-tls1_2", True), ("-tls1_3", True)):
            p = subprocess.run(["openssl", "s_client", version, "-cipher", "DEFAULT@SECLEVEL=0", "-connect",
                                f"127.0.0.1:{server.port}", "-quiet"], input=b"QUIT\r\n", capture_output=True,
                               timeout=30)
            check_equal(p.stdout.decode().startswith("+OK"), ok, f"TLS {version}: {p.stderr.decode()[-300:]}")


def test_stls_command_injection(env):
    """Plaintext sent with STLS in one packet is dropped, not run after the handshake."""
    messages, records = make_mbox(2)
    env.write_mailbox("".join(records).encode())
    with SocketServer(env, tls_files(env)) as server:
        raw = socket.create_connection(("127.0.0.1", server.port), timeout=20)
        check(raw.recv(1000).startswith(b"+OK"), "greeting")
        raw.sendall(b"STLS\r\nUSER alice\r\nPASS secret\r\n")
        reply = b""
        while not reply.endswith(b"\r\n"):
            reply += raw.recv(1)
        check_equal(reply, b"+OK Begin TLS negotiation\r\n", "STLS reply")
        tls = client_context().wrap_socket(raw)  # fails if plaintext replies followed
        tls.sendall(b"STAT\r\n")
        answer = tls.recv(1000)
        check(answer.startswith(b"-ERR Not logged in"), f"injected commands were run: {answer!r}")
        tls.sendall(b"QUIT\r\n")
        tls.close()


def test_require_tls(env):
    env.write_mailbox(b"")
    with SocketServer(env, tls_files(env) + ["--require-tls"]) as server:
        pop = poplib.POP3("127.0.0.1", server.port, timeout=20)
        caps = pop.capa()
        check("USER" not in caps and "SASL" not in caps and "STLS" in caps, f"CAPA before TLS: {caps}")
        for command in ("USER alice", "PASS secret", "AUTH PLAIN " + plain(b"\0alice\0secret")):
            try:
                pop._shortcmd(command)
                check(False, f"{command} accepted before TLS")
            except poplib.error_proto as e:
                check("[AUTH]" in str(e), str(e))
        pop.stls(client_context())
        check("USER" in pop.capa(), "CAPA after TLS")
        pop.user("alice")
        pop.pass_("secret")
        check_equal(pop.stat(), (0, 0), "STAT")
        pop.quit()
    # Without a certificate, --require-tls is a configuration error.
    p = subprocess.run([support.POPD, "--require-tls"], capture_output=True, text=True)
    check(p.returncode == 2 and "--tls-cert" in p.stderr, p.stderr)


def test_auth_plain(env):
    messages, records = make_mbox(2)
    env.write_mailbox("".join(records).encode())
    out, _ = env.run("AUTH\r\nAUTH PLAIN " + plain(b"\0alice\0secret") + "\r\nSTAT\r\nQUIT\r\n")
    lines = out.split("\r\n")
    check_equal(lines[1:5], ["+OK Supported mechanisms follow", "PLAIN", "LOGIN", "."], "AUTH list")
    check(lines[5].startswith("+OK maildrop has 2 messages"), out)
    out, _ = env.run("AUTH PLAIN\r\n" + plain(b"alice\0alice\0secret") + "\r\nSTAT\r\nQUIT\r\n")
    check("+ \r\n+OK maildrop has 2 messages" in out, out)
    out, _ = env.run("AUTH PLAIN\r\n*\r\nAUTH PLAIN " + plain(b"\0alice\0wrong") + "\r\n"
                     "AUTH PLAIN " + plain(b"bob\0alice\0secret") + "\r\n"
                     "AUTH PLAIN " + plain(b"\0nobody\0secret") + "\r\n")
    lines = out.split("\r\n")
    check_equal(lines[1:3], ["+ ", "-ERR Authentication cancelled"], "cancel")
    check_equal(lines[3], "-ERR [AUTH] Authentication failed", "wrong password")
    check(lines[4].startswith("-ERR [AUTH] Authorization identity"), out)
    check(lines[5].startswith("-ERR [AUTH] Authentication failed; too many failures"), out)
    with SocketServer(env) as server:  # over a socket, with poplib's own AUTH support
        pop = poplib.POP3("127.0.0.1", server.port, timeout=20)
        check("SASL" in pop.capa() and pop.capa()["SASL"] == ["PLAIN", "LOGIN"], "CAPA SASL PLAIN LOGIN")
        pop._shortcmd("AUTH PLAIN " + plain(b"\0alice\0secret"))
        check_equal(pop.stat()[0], 2, "STAT after AUTH PLAIN")
        pop.quit()


def test_stunnel(env):
    """POP3S through stunnel (stunnel/popd.conf's way): stunnel holds TLS
    and starts popd on the decrypted stream."""
    messages, records = make_mbox(2)
    env.write_mailbox("".join(records).encode())
    cert_args = tls_files(env)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    popd = env.command()
    conf = env.dir + "/stunnel.conf"
    with open(conf, "w") as f:
        f.write(f"foreground = yes\npid =\n[pop3s]\naccept = 127.0.0.1:{port}\nexec = {popd[0]}\n"
                f"execArgs = popd {' '.join(popd[1:])}\ncert = {cert_args[1]}\nkey = {cert_args[3]}\n"
                f"sslVersionMin = TLSv1.2\n")
    stunnel = subprocess.Popen(["stunnel", conf], env=dict(os.environ, **env.variables()),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        support.wait_until_listening(port)
        pop = poplib.POP3_SSL("127.0.0.1", port, context=client_context(), timeout=20)
        pop.user("alice")
        pop.pass_("secret")
        check_equal(pop.stat()[0], 2, "STAT through stunnel")
        pop.quit()
    finally:
        stunnel.terminate()
        stunnel.wait()


def test_login_timing(env):
    """A wrong password and an unknown user are answered after the same
    time, --failure-delay after the attempt began, whatever PAM spends: here
    pam_faildelay asks for a (randomised) second, and a pam_exec script
    spends 0.3 s on known users only, as pam_unix's hashing does."""
    slow = env.dir + "/slow-for-known-users"
    with open(slow, "w") as f:
        f.write('#!/bin/sh\n[ "$PAM_USER" = alice ] && sleep 0.3\nexit 0\n')
    os.chmod(slow, 0o755)
    security = "/usr/lib/x86_64-linux-gnu/security"
    with open(env.dir + "/pam/popd-timing", "w") as f:
        f.write(f"auth optional {security}/pam_faildelay.so delay=1000000\n"
                f"auth optional {security}/pam_exec.so quiet {slow}\n")
        for kind in ("auth", "account", "password", "session"):
            f.write(f"{kind} required {support.MATRIX} passdb={env.dir}/passdb\n")
    env.write_mailbox(b"")
    delay = 1.0
    times = {"alice": [], "nosuchuser": []}
    with SocketServer(env, ["--pam-service", "popd-timing", "--failure-delay", str(delay)]) as server:
        for attempt in range(20):
            user = "alice" if attempt % 2 else "nosuchuser"
            with socket.create_connection(("127.0.0.1", server.port), timeout=20) as s:
                f = s.makefile("rb")
                f.readline()
                s.sendall(f"USER {user}\r\n".encode())
                f.readline()
                start = time.monotonic()
                s.sendall(b"PASS wrong\r\n")
                reply = f.readline()
                times[user].append(time.monotonic() - start)
                check(reply.startswith(b"-ERR [AUTH] Authentication failed"), reply)
    known, unknown = (sorted(times[u])[len(times[u]) // 2] for u in ("alice", "nosuchuser"))
    print(f"     median time to -ERR: wrong password {known * 1000:.0f} ms, unknown user {unknown * 1000:.0f} ms "
          f"(--failure-delay {delay * 1000:.0f} ms)")
    check(abs(known - unknown) <= 0.05, "a wrong password and an unknown user take different times")
    for median in (known, unknown):
        check(abs(median - delay) <= delay * 0.1, f"{median:.3f}s is not within 10% of --failure-delay")


def session_time_limit(env, args=(), wrap=None):
    """--max-session ends even a busy connection, committing nothing, and
    its last reply reaches the client."""
    messages, records = make_mbox(2)
    path = env.write_mailbox("".join(records).encode())
    with SocketServer(env, ["--max-session", "2"] + list(args)) as server:
        s = socket.create_connection(("127.0.0.1", server.port), timeout=20)
        s = wrap(s) if wrap else s
        s.sendall((login() + "DELE 1\r\n").encode())
        start, received = time.time(), b""
        while time.time() - start < 15:
            try:
                s.sendall(b"NOOP\r\n")
            except OSError:
                break
            s.settimeout(0.4)
            try:
                chunk = s.recv(4096)
                if not chunk:
                    break
                received += chunk
            except socket.timeout:
                pass
            except ConnectionResetError:
                check(False, "reset: popd closed on unread NOOPs instead of lingering")
            except ssl.SSLError as e:
                check(False, f"TLS error instead of close_notify: {e}")
        elapsed = time.time() - start
        check(1.5 < elapsed < 8, f"connection ended after {elapsed:.1f}s: {received[-100:]!r}")
        check(b"Idle timeout" not in received, f"the idle timeout fired instead: {received[-300:]!r}")
        check(received.endswith(b"-ERR Session time limit reached, closing connection\r\n"),
              f"the last reply did not arrive: {received[-200:]!r}")
    check_equal(open(path, "rb").read(), "".join(records).encode(), "mailbox after the limit")


def test_session_time_limit(env):
    session_time_limit(env)


def test_session_time_limit_tls(env):
    context = client_context()
    # A ragged end (no close_notify) raises SSLEOFError here.
    session_time_limit(env, tls_files(env) + ["--tls-implicit"],
                       lambda s: context.wrap_socket(s, suppress_ragged_eofs=False))


def test_client_that_stops_reading(env):
    """A client that stops reading in the middle of RETR is dropped after
    the idle timeout; the mailbox is left as it was and unlocked."""
    big = "From a Mon Jan  1 00:00:00 2024\nSubject: big\n\n" + ("y" * 999 + "\n") * 30000 + "\n"
    small = "From b Mon Jan  1 00:00:00 2024\nSubject: small\n\nx\n\n"
    path = env.write_mailbox((big + small).encode())
    with SocketServer(env, ["--timeout", "2"]) as server:
        s = socket.create_connection(("127.0.0.1", server.port), timeout=20)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall((login() + "DELE 2\r\nRETR 1\r\nQUIT\r\n").encode())
        start = time.time()
        while os.path.exists(path + ".lock") or time.time() - start < 1:
            check(time.time() - start < 20, "popd still holds the mailbox 20 s after the client stopped reading")
            time.sleep(0.2)
        s.close()
    check_equal(open(path, "rb").read(), (big + small).encode(), "mailbox after a stuck client")


if __name__ == "__main__":
    run_tests([v for k, v in list(globals().items()) if k.startswith("test_")], "security",
              sys.argv[2] if len(sys.argv) > 2 else "")
