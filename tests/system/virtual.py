#!/usr/bin/env python3
"""Virtual users (issue 33): the password fields of a passwd-file as
Dovecot reads them. popd --hash-password makes fields Dovecot's own
checker (doveadm pw -t) accepts, and refuses what it should.

Usage: tests/system/virtual.py PATH-TO-POPD [TEST-NAME-SUBSTRING]
"""
import os
import shutil
import subprocess
import sys

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


if __name__ == "__main__":
    run_tests([v for k, v in list(globals().items()) if k.startswith("test_")], "virtual", ONLY)
