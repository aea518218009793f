"""The benchmark's POP3 client: one thread, non-blocking, writes the whole
pipelined command burst while it reads replies in 1 MiB reads, plain or
TLS. Its own ceiling is measured against a sender that sendfile()s the same
bytes (bench/run.py, "client ceiling")."""
import selectors
import socket
import ssl
import time

READ = 1 << 20


def tls_context():
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


# The receive buffer, allocated and touched before a timed run and kept
# between runs: page faults on fresh memory are slow on virtual machines,
# and would be counted against the server.
_buffer = bytearray()


def session(port, commands, tls=False, expect=None, capacity=1 << 24):
    """Connects, sends `commands` (bytes) at once, reads until the server
    closes the connection (after QUIT) or `expect` bytes came. Returns
    (seconds, received bytes). `capacity`: bytes expected at most (more
    works, slower)."""
    global _buffer
    if len(_buffer) < max(capacity, expect or 0) + READ:
        _buffer = bytearray(max(capacity, expect or 0) + READ)
        view = memoryview(_buffer)[::4096]
        view[:] = b"\1" * len(view)  # touch every page now
    received = _buffer
    start = time.perf_counter()
    sock = socket.create_connection(("127.0.0.1", port))
    if tls:
        sock = tls_context().wrap_socket(sock)
    sock.setblocking(False)
    filled = 0
    out = memoryview(commands)
    selector = selectors.DefaultSelector()
    selector.register(sock, selectors.EVENT_READ | (selectors.EVENT_WRITE if out else 0))
    done = False
    while not done:
        ready = selector.select(timeout=120)
        if not ready:
            raise TimeoutError(f"no reply for 120 s after {filled} bytes")
        for _key, events in ready:
            if events & selectors.EVENT_WRITE and out:
                try:
                    out = out[sock.send(out[:1 << 18]):]
                except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError):
                    pass
                if not out:
                    selector.modify(sock, selectors.EVENT_READ)
            while True:  # TLS may hold decrypted data that select cannot see
                if len(received) - filled < READ:
                    received.extend(bytes(len(received)))  # more than `capacity`
                try:
                    n = sock.recv_into(memoryview(received)[filled:], READ)
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                    break
                except (ConnectionResetError, ssl.SSLEOFError):
                    n = 0
                if n == 0:
                    done = True
                    break
                filled += n
                if expect is not None and filled >= expect:
                    done = True
                    break
    elapsed = time.perf_counter() - start
    selector.close()
    sock.close()
    return elapsed, bytes(received[:filled])


def multiline_bodies(data, start, count):
    """Yields (status line, raw body up to but excluding the terminating
    '.\\r\\n') for `count` consecutive multi-line replies from `start`."""
    at = start
    for _ in range(count):
        eol = data.index(b"\r\n", at)
        status = data[at:eol]
        body_start = eol + 2
        if data.startswith(b".\r\n", body_start):
            end = body_start
        else:
            end = data.index(b"\r\n.\r\n", body_start - 2) + 2
        yield status, data[body_start:end]
        at = end + 3
