#!/usr/bin/env python3
"""Writes a deterministic mbox for the benchmark: the same bytes for the
same SIZE on every machine.

  small   100 messages        (~2 MB)
  medium  10,000 messages     (~200 MB)
  large   100,000 messages    (~1.1 GB)

A realistic mix: text messages of 2 KB and up with folded Received headers,
body lines starting with "From " (stored as ">From ", as MDAs quote them) and
with "."; about one in thirty carries a base64 attachment of 20-300 KB, and
one in a thousand one of 1-2 MB.

Usage: bench/mkmbox.py SIZE OUTPUT
"""
import base64
import random
import sys

SIZES = {"small": (100, 20_000), "medium": (10_000, 20_000), "large": (100_000, 11_000)}
WORDS = ("the of and to in is you that it he was for on are as with his they at be this have from or one had "
         "by word but not what all were we when your can said there use an each which she do how their if will "
         "up other about out many then them these so some her would make like him into time has look two more "
         "write go see number no way could people my than first water been call who oil its now find long down "
         "day did get come made may part mailbox server message retrieve delete quit octets").split()


def text_lines(rng, count):
    lines = []
    for _ in range(count):
        n = rng.randrange(4, 14)
        line = " ".join(rng.choice(WORDS) for _ in range(n))
        roll = rng.random()
        if roll < 0.02:
            line = ">From " + line  # "From " at a line start, quoted by the MDA
        elif roll < 0.04:
            line = "." + line  # byte-stuffed on the wire
        elif roll < 0.08:
            line = ""
        lines.append(line)
    return lines


def attachment(rng, size):
    raw = rng.randbytes(size * 3 // 4)
    data = base64.b64encode(raw).decode()
    return [data[i:i + 76] for i in range(0, len(data), 76)]


def message(i, rng, average_text):
    day = 1 + i % 28
    hops = rng.randrange(2, 5)
    headers = [f"From sender{i % 97}@example.org Mon Jan {day:2d} 10:{i % 60:02d}:00 2024"]
    for h in range(hops):
        headers += [f"Received: from relay{h}.example.net (relay{h}.example.net [192.0.2.{h + 1}])",
                    f"\tby mx.example.com (Postfix) with ESMTPS id {i:08X}{h}",
                    f"\tfor <user@example.com>; Mon, {day} Jan 2024 10:{i % 60:02d}:0{h} +0000"]
    headers += [f"From: Sender {i % 97} <sender{i % 97}@example.org>", "To: user@example.com",
                f"Subject: message {i} about {rng.choice(WORDS)} {rng.choice(WORDS)}",
                f"Date: Mon, {day} Jan 2024 10:{i % 60:02d}:00 +0000",
                f"Message-ID: <{i}.{rng.randrange(1 << 30)}@example.org>", "MIME-Version: 1.0"]
    text = text_lines(rng, max(20, int(rng.expovariate(1 / average_text)) // 60))
    roll = rng.random()
    if roll < 0.035:
        size = rng.randrange(1_000_000, 2_000_000) if roll < 0.001 else rng.randrange(20_000, 300_000)
        headers.append('Content-Type: multipart/mixed; boundary="b"')
        body = (["--b", "Content-Type: text/plain", ""] + text +
                ["--b", "Content-Type: application/octet-stream", "Content-Transfer-Encoding: base64", ""] +
                attachment(rng, size) + ["--b--"])
    else:
        headers.append("Content-Type: text/plain; charset=us-ascii")
        body = text
    return "\n".join(headers + [""] + body) + "\n\n"


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in SIZES:
        sys.exit(__doc__)
    count, average_text = SIZES[sys.argv[1]]
    rng = random.Random(8)
    with open(sys.argv[2], "w", buffering=1 << 22) as out:
        for i in range(count):
            out.write(message(i, rng, average_text))


if __name__ == "__main__":
    main()
