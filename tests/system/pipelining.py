#!/usr/bin/env python3
"""Pipelining at scale through the real popd under systemd-socket-activate
(as root: privilege separation): 100,000 RETRs, or 100,000 TOPs, in one
burst on a 100,000-message mailbox, written by one task while another reads
(RFC 2449 PIPELINING), over plain TCP, STLS and implicit TLS. Every reply
byte must be exact. Then: who holds the client socket after login, and a
TLS client that stops reading.

Usage: tests/system/pipelining.py PATH-TO-POPD [TEST-NAME-SUBSTRING]
"""
import asyncio
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
ONLY = sys.argv[2] if len(sys.argv) > 2 else ""
sys.argv = sys.argv[:2]
import support  # noqa: E402
from support import IS_ROOT, ALICE_UID, SocketServer, check, check_equal, login, run_tests  # noqa: E402
from security import client_context, tls_files  # noqa: E402

COUNT = 100_000
BURST_SECONDS = 300  # a hang shows as this timeout; the burst takes seconds


def message(i):
    """A small message with a line that needs byte-stuffing; sizes vary."""
    return (f"Subject: message {i}\nMessage-ID: <{i}@example.org>\n\n"
            f"Body of message {i}\n.dot line {i}\n{'x' * (i % 300)}\n")


def client_form(text):
    return text.replace("\n", "\r\n").encode()


def stuffed(data):
    """RFC 1939 byte-stuffing of CRLF lines, and the terminating dot."""
    lines = data.split(b"\r\n")[:-1]
    return b"".join((b"." + l if l.startswith(b".") else l) + b"\r\n" for l in lines) + b".\r\n"


class BigMailbox:
    """COUNT messages in alice's spool, and the replies popd must give."""

    def __init__(self, env):
        texts = [message(i) for i in range(COUNT)]
        env.write_mailbox("".join(f"From s@example.org Mon Jan  1 00:00:00 2024\n{t}\n" for t in texts).encode())
        self.path = env.mailbox()
        self.forms = [client_form(t) for t in texts]
        self.octets = sum(len(f) for f in self.forms)

    def session(self, verb):
        """The command burst after the greeting, and the expected replies."""
        numbers = range(1, COUNT + 1)
        commands = login() + "LIST\r\n" + "".join(f"{verb} {n}{' 0' if verb == 'TOP' else ''}\r\n" for n in numbers)
        commands += "QUIT\r\n"
        replies = [b"+OK Send your password\r\n",
                   f"+OK maildrop has {COUNT} messages ({self.octets} octets)\r\n".encode(),
                   b"+OK scan listing follows\r\n",
                   b"".join(f"{n} {len(f)}\r\n".encode() for n, f in enumerate(self.forms, 1)), b".\r\n"]
        for form in self.forms:
            if verb == "RETR":
                replies += [f"+OK {len(form)} octets\r\n".encode(), stuffed(form)]
            else:
                replies += [b"+OK top of message follows\r\n", stuffed(form[:form.index(b"\r\n\r\n") + 4])]
        replies.append(b"+OK popd signing off (0 messages deleted)\r\n")
        return commands.encode(), b"".join(replies)


async def burst(port, mode, commands, expected):
    """Writer and reader run concurrently on one connection; returns what
    was read after the greeting (and the STLS exchange)."""
    tls = client_context() if mode == "implicit" else None
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls, limit=1 << 20)
    greeting = await reader.readline()
    check(greeting.startswith(b"+OK"), f"greeting {greeting!r}")
    if mode == "stls":
        writer.write(b"STLS\r\n")
        check_equal(await reader.readline(), b"+OK Begin TLS negotiation\r\n", "STLS")
        await writer.start_tls(client_context())
    received = bytearray()

    async def write():
        writer.write(commands)
        await writer.drain()

    async def read():
        while len(received) < len(expected):
            chunk = await reader.read(1 << 20)
            if not chunk:
                break
            received.extend(chunk)

    start = time.time()
    try:
        await asyncio.wait_for(asyncio.gather(write(), read()), BURST_SECONDS)
    except asyncio.TimeoutError:
        raise AssertionError(f"{mode}: hung after {len(received)} of {len(expected)} bytes")
    elapsed = time.time() - start
    writer.close()
    return bytes(received), elapsed


def compare(received, expected, what):
    if received == expected:
        return
    at = next((i for i, (a, b) in enumerate(zip(received, expected)) if a != b), min(len(received), len(expected)))
    raise AssertionError(f"{what}: {len(received)} bytes received, {len(expected)} expected; first difference at "
                         f"{at}:\n  got:      {received[max(0, at - 80):at + 80]!r}\n"
                         f"  expected: {expected[max(0, at - 80):at + 80]!r}")


def run_bursts(env, mode, args):
    box = BigMailbox(env)
    before = open(box.path, "rb").read()
    with SocketServer(env, args + ["--timeout", "60"]) as server:
        for verb in ("RETR", "TOP"):
            commands, expected = box.session(verb)
            received, elapsed = asyncio.run(burst(server.port, mode, commands, expected))
            compare(received, expected, f"{verb} burst, {mode}")
            print(f"     {mode}: {COUNT:,} {verb}s pipelined, {len(received) / 1e6:.1f} MB in {elapsed:.2f}s")
    check(open(box.path, "rb").read() == before, "mailbox changed by a read-only session")


def test_burst_plain(env):
    run_bursts(env, "plain", [])


def test_burst_stls(env):
    run_bursts(env, "stls", tls_files(env))


def test_burst_implicit_tls(env):
    run_bursts(env, "implicit", tls_files(env) + ["--tls-implicit"])


# --- who holds the connection ---------------------------------------------

def popd_processes(server):
    """pid -> (uid, parent pid, state) of every popd process that server
    started, zombies too."""
    table = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            status = open(f"/proc/{pid}/status").read()
            name = open(f"/proc/{pid}/comm").read().strip()
        except OSError:
            continue
        fields = dict(l.split(":", 1) for l in status.splitlines() if ":" in l)
        table[int(pid)] = (name, int(fields["Uid"].split()[0]), int(fields["PPid"]), fields["State"].split()[0])

    def descends(pid):
        while pid in table and pid != server.process.pid:
            pid = table[pid][2]
        return pid == server.process.pid

    return {pid: (uid, ppid, state) for pid, (name, uid, ppid, state) in table.items()
            if name == "popd" and descends(pid)}


def socket_inode(local_port, remote_port):
    """The inode of the server's end of a loopback TCP connection."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in open(table).read().splitlines()[1:]:
            fields = line.split()
            if (int(fields[1].split(":")[1], 16), int(fields[2].split(":")[1], 16)) == (local_port, remote_port):
                return fields[9]
    return None


def wait_for(condition, seconds=10):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def session_layout(env, args, wrap=None):
    """Logs in and returns (processes, pid of the session, does it hold the TCP socket)."""
    env.write_mailbox(b"From a Mon Jan  1 00:00:00 2024\nSubject: x\n\nbody\n")
    with SocketServer(env, args) as server:
        raw = socket.create_connection(("127.0.0.1", server.port), timeout=20)
        client_port = raw.getsockname()[1]
        s = wrap(raw) if wrap else raw
        f = s.makefile("rb")
        f.readline()
        s.sendall(login().encode())
        f.readline(), f.readline()
        check(wait_for(lambda: any(uid == ALICE_UID for uid, _, _ in popd_processes(server).values())),
              "no session")
        inode = socket_inode(server.port, client_port)
        check(inode, "server end of the connection not found")
        # The pre-auth process may take a moment to exit after handing over.
        time.sleep(0.3)
        processes = popd_processes(server)
        session = next(pid for pid, (uid, _, _) in processes.items() if uid == ALICE_UID)
        fds = [os.readlink(f"/proc/{session}/fd/{fd}") for fd in os.listdir(f"/proc/{session}/fd")]
        s.sendall(b"STAT\r\nQUIT\r\n")
        check(f.readline().startswith(b"+OK 1 "), "STAT")
        check(f.readline().startswith(b"+OK popd signing off"), "QUIT")
        s.close()
        return processes, f"socket:[{inode}]" in fds


def list_latencies(env, args=(), tls=False, sessions=20, messages=10_000):
    """The time from LIST to the end of its reply, in ms, one LIST in each
    of `sessions` sessions over loopback TCP."""
    env.write_mailbox("".join(f"From s@example.org Mon Jan  1 00:00:00 2024\nSubject: {i}\n\nbody {i}\n\n"
                              for i in range(messages)).encode())
    latencies = []
    with SocketServer(env, args) as server:
        for _ in range(sessions):
            raw = socket.create_connection(("127.0.0.1", server.port), timeout=30)
            conn = client_context().wrap_socket(raw) if tls else raw
            try:
                def read_until(end):
                    data = b""
                    while not data.endswith(end):
                        chunk = conn.recv(1 << 16)
                        check(chunk, f"the connection ended after {data[-200:]!r}")
                        data += chunk
                    return data
                data = read_until(b"\r\n")
                conn.sendall(login().encode())
                while data.count(b"\r\n") < 3:  # the greeting, USER's and PASS's replies
                    data += read_until(b"\r\n")
                check(b"+OK maildrop has" in data, data)
                start = time.perf_counter()
                conn.sendall(b"LIST\r\n")
                reply = read_until(b"\r\n.\r\n")
                latencies.append((time.perf_counter() - start) * 1000)
                check_equal(reply.count(b"\r\n"), messages + 2, "lines of the LIST reply")
                conn.sendall(b"QUIT\r\n")
            finally:
                conn.close()
    return latencies


def check_no_delayed_ack(latencies, what):
    """A reply that waits for the client's delayed ACK (Nagle) takes 40 ms
    more than the rest: without TCP_NODELAY, about half of them do."""
    stalled = [round(l) for l in latencies if l >= 40]
    print(f"     {what}: LIST of 10,000 messages, 20 sessions: median {sorted(latencies)[len(latencies) // 2]:.1f} ms, "
          f"{len(stalled)} at 40 ms or more")
    check(len(stalled) <= 2, f"{what}: replies waited for a delayed ACK: {stalled}")


def test_multiline_reply_waits_for_no_ack(env):
    """TCP_NODELAY on the client's socket: the end of a multi-line reply
    goes out at once, plain and through the TLS relay."""
    check_no_delayed_ack(list_latencies(env), "plain")
    check_no_delayed_ack(list_latencies(env, tls_files(env) + ["--tls-implicit"], tls=True), "implicit TLS")


def test_session_holds_the_plain_socket(env):
    """Without TLS the session process serves the client's socket itself:
    no relay process remains (not even a zombie)."""
    if not IS_ROOT:
        print("     (skipped: needs root)")
        return
    processes, holds = session_layout(env, [])
    check(holds, "the session process does not hold the client's TCP socket")
    check_equal(sorted(uid for uid, _, _ in processes.values()), sorted([0, ALICE_UID]),
                f"popd processes by uid after login: {processes}")


def test_tls_session_is_relayed(env):
    """With TLS the pre-auth process keeps the TLS state and relays; the
    session does not see the TCP socket."""
    if not IS_ROOT:
        print("     (skipped: needs root)")
        return
    context = client_context()
    processes, holds = session_layout(env, tls_files(env) + ["--tls-implicit"], lambda s: context.wrap_socket(s))
    check(not holds, "the session process holds the TLS connection's socket")
    check_equal(sorted(uid for uid, _, _ in processes.values()), sorted([0, support.PRIVSEP_UID, ALICE_UID]),
                f"popd processes by uid after login: {processes}")


def stuck_client(env, tls, timeout=2, signal=None):
    """A client that stops reading mid-reply (RETRs of a 30 MB message, then
    QUIT after a DELE) is dropped after the idle timeout, or at once on
    `signal` to the session; the mailbox is left as it was and unlocked,
    and no popd process is left. Returns the seconds until the lock went."""
    big = "From a Mon Jan  1 00:00:00 2024\nSubject: big\n\n" + ("y" * 999 + "\n") * 30000 + "\n"
    small = "From b Mon Jan  1 00:00:00 2024\nSubject: small\n\nx\n\n"
    path = env.write_mailbox((big + small).encode())
    args = (tls_files(env) + ["--tls-implicit"] if tls else []) + ["--timeout", str(timeout)]
    with SocketServer(env, args) as server:
        raw = socket.create_connection(("127.0.0.1", server.port), timeout=20)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s = client_context().wrap_socket(raw) if tls else raw
        s.sendall((login() + "DELE 2\r\n" + "RETR 1\r\n" * 3 + "QUIT\r\n").encode())
        start = time.time()
        if signal:
            check(wait_for(lambda: any(uid == ALICE_UID for uid, _, _ in popd_processes(server).values())),
                  "no session")
            time.sleep(1)  # well into the RETRs, the client's buffers full
            session = next(pid for pid, (uid, _, _) in popd_processes(server).items() if uid == ALICE_UID)
            start = time.time()
            os.kill(session, signal)
        while os.path.exists(path + ".lock") or time.time() - start < 1:
            check(time.time() - start < 20, "popd still holds the mailbox 20 s after the client stopped reading")
            time.sleep(0.05)
        took = time.time() - start
        check(wait_for(lambda: not popd_processes(server), 15), f"popd processes left: {popd_processes(server)}")
        s.close()
    check_equal(open(path, "rb").read(), (big + small).encode(), "mailbox after a stuck client")
    return took


def test_tls_client_that_stops_reading(env):
    stuck_client(env, tls=True)


def test_plain_client_that_stops_reading(env):
    """The same in plain text, where a second thread of the session writes
    RETR bodies to the socket (io/sender.h)."""
    stuck_client(env, tls=False)


def test_termination_while_a_plain_client_stops_reading(env):
    """SIGTERM ends a session whose sending thread waits for a stuck client
    at once, not after the idle timeout, and the locks go."""
    if not IS_ROOT:
        print("     (skipped: needs root)")
        return
    import signal
    took = stuck_client(env, tls=False, timeout=60, signal=signal.SIGTERM)
    check(took < 5, f"the session took {took:.1f} s to end after SIGTERM")


if __name__ == "__main__":
    run_tests([v for k, v in list(globals().items()) if k.startswith("test_")], "pipelining", ONLY)
