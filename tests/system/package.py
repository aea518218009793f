#!/usr/bin/env python3
"""The Debian package, as an administrator meets it (as root): `make deb`
builds it and lintian checks it; it installs on this machine; every file
lands where popd.8 says; a real account logs in through real PAM
(/etc/pam.d/popd) with the command line of the installed units, port 110
and 995; `dpkg --purge` removes popd and leaves the spool alone.

Usage: tests/system/package.py
"""
import glob
import os
import poplib
import pwd
import resource
import shlex
import shutil
import socket
import ssl
import subprocess
import sys
import time

sys.argv = sys.argv[:1] + ["/usr/sbin/popd"]  # support's POPD: the installed one
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from support import free_port, sh, check, check_equal, client_form, make_mbox, wait_until_listening  # noqa: E402

from support import TOP  # noqa: E402
USER, PASSWORD = "popd-pkgtest", "pkg-Test-pw-1"
SPOOL = f"/var/mail/{USER}"
# Where popd.8 (FILES) says each file is.
FILES = ["/usr/sbin/popd", "/usr/share/man/man8/popd.8.gz", "/etc/pam.d/popd", "/etc/default/popd",
         "/lib/systemd/system/popd.socket", "/lib/systemd/system/popd@.service",
         "/lib/systemd/system/pop3s.socket", "/lib/systemd/system/pop3s@.service",
         "/etc/xinetd.d/popd", "/etc/xinetd.d/pop3s", "/etc/fail2ban/filter.d/popd.conf",
         "/etc/fail2ban/jail.d/popd.conf", "/usr/lib/tmpfiles.d/popd.conf"]


def unit_command(unit):
    """ExecStart of an installed unit, its variables expanded the way
    systemd does: Environment= first, then /etc/default/popd."""
    text = open(f"/lib/systemd/system/{unit}").read()
    variables = dict(line.split("=", 2)[1:] for line in text.splitlines() if line.startswith("Environment="))
    defaults = sh("sh", "-c", ". /etc/default/popd; env")
    variables.update(line.split("=", 1) for line in defaults.splitlines() if line.startswith("POPD_"))
    command = next(line[len("ExecStart="):] for line in text.splitlines() if line.startswith("ExecStart="))
    words = []
    for word in shlex.split(command):
        if word.startswith("$") and not word.startswith("${"):
            words += variables.get(word[1:], "").split()  # $X: split into words
        else:
            words.append(word.replace("${POPD_TLS_CERT}", variables.get("POPD_TLS_CERT", ""))
                         .replace("${POPD_TLS_KEY}", variables.get("POPD_TLS_KEY", "")))
    return words


def serve(command):
    port = free_port()
    process = subprocess.Popen(["systemd-socket-activate", "--inetd", "-a", "-l", f"127.0.0.1:{port}"] + command,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until_listening(port)
    return process, port


def make_install():
    """make install puts the same files where popd.8 says (the manual page
    uncompressed), under DESTDIR and PREFIX; make uninstall takes them
    away but for the administrator's PAM service and /etc/default/popd."""
    root = f"{TOP}/build/install-test"
    shutil.rmtree(root, ignore_errors=True)
    paths = ["DESTDIR=" + root, "PREFIX=/usr", "UNITDIR=/lib/systemd/system"]
    sh("make", "-C", TOP, "install", *paths, timeout=600)
    for path in FILES:
        path = path.replace("popd.8.gz", "popd.8")
        check(os.path.exists(root + path), f"make install did not put {path}")
    sh("make", "-C", TOP, "uninstall", *paths)
    left = sorted(os.path.join(d, f)[len(root):] for d, _, files in os.walk(root) for f in files)
    check_equal(left, ["/etc/default/popd", "/etc/pam.d/popd"], "left by make uninstall")
    shutil.rmtree(root)
    print("     make install DESTDIR=... PREFIX=/usr: every file where popd.8 says; make uninstall: all gone "
          "but the PAM service and /etc/default/popd")


def main():
    if os.geteuid() != 0:
        print("package: skipped (needs root)")
        return
    make_install()
    sh("make", "-C", TOP, "deb", timeout=1800)
    deb = glob.glob(f"{TOP}/build/deb/popd_*.deb")
    check(len(deb) == 1, f"built: {deb}")
    print(f"     built {os.path.basename(deb[0])}; lintian: no errors or warnings")
    sh("apt-get", "install", "-y", "-q", "-o", "Dpkg::Options::=--force-confdef", "-o",
       "Dpkg::Options::=--force-confold", deb[0], env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"),
       timeout=900)
    try:
        installed(deb[0])
    finally:
        subprocess.run(["userdel", "-r", USER], capture_output=True)
        if os.path.exists(SPOOL):
            os.unlink(SPOOL)
        subprocess.run(["dpkg", "--purge", "popd"], capture_output=True)  # if a check failed before
    print("package: 1 passed, 0 failed")


def check_hash_memory():
    """pam_unix checks the password with yescrypt (Debian 12's default),
    which maps 16 MiB and writes all of it: with the binary's mmap hook
    (sys/huge_pages.h) in huge pages, not 4,100 page faults a hash."""
    hashed = next(line for line in open("/etc/shadow") if line.startswith(USER + ":")).split(":")[1]
    thp = "/sys/kernel/mm/transparent_hugepage/enabled"
    if not hashed.startswith("$y$") or not os.path.exists(thp) or "[never]" in open(thp).read():
        print("     (page faults of a login not checked: no yescrypt hash or no transparent huge pages)")
        return
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt
    out = subprocess.run(["/usr/sbin/popd"], input=f"USER {USER}\r\nPASS {PASSWORD}\r\nSTAT\r\nQUIT\r\n".encode(),
                         capture_output=True, timeout=60).stdout
    faults = resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt - before
    check(b"\r\n+OK 4 " in out, out)
    check(faults < 4000, f"a login took {faults} page faults: the password hash's memory is in small pages")
    print(f"     a login with a yescrypt hash, all of popd's processes: {faults} page faults")


def installed(deb):
    for path in FILES:
        check(os.path.exists(path), f"{path} is not installed")
    check(os.path.isdir("/run/popd") and os.stat("/run/popd").st_uid == 0, "/run/popd")
    check(pwd.getpwnam("popd").pw_shell in ("/usr/sbin/nologin", "/bin/false"), "the popd account")
    for service in ("popd", "pop3s"):
        check("disable\t\t= yes" in open(f"/etc/xinetd.d/{service}").read(), f"xinetd {service} enabled")

    # A real account and a Debian spool, as the MDA leaves them.
    subprocess.run(["userdel", "-r", USER], capture_output=True)
    sh("useradd", "--create-home", "--shell", "/bin/sh", USER)
    sh("chpasswd", input=f"{USER}:{PASSWORD}\n")
    messages, records = make_mbox(4, seed=41)
    with open(SPOOL, "wb") as f:
        f.write("".join(records).encode())
    account = pwd.getpwnam(USER)
    os.chown(SPOOL, account.pw_uid, 8)
    os.chmod(SPOOL, 0o660)
    check_hash_memory()

    process, port = serve(unit_command("popd@.service"))
    try:
        pop = poplib.POP3("127.0.0.1", port, timeout=30)
        pop.user(USER)
        pop.pass_(PASSWORD)
        for i, m in enumerate(messages, 1):
            _, lines, _ = pop.retr(i)
            check_equal(b"".join(l + b"\r\n" for l in lines), client_form(m).encode(), f"RETR {i}")
        pop.dele(1)
        check(pop.quit().startswith(b"+OK"), "QUIT")
    finally:
        process.terminate()
        process.wait()
    kept = "".join(records[1:]).encode()
    check_equal(open(SPOOL, "rb").read(), kept, "spool after QUIT through popd@.service")

    # Debian's snakeoil pair, which pop3s@.service uses until there is a
    # real certificate: made as an administrator makes it if missing.
    if not os.path.exists("/etc/ssl/private/ssl-cert-snakeoil.key"):
        sh("make-ssl-cert", "generate-default-snakeoil")
    process, port = serve(unit_command("pop3s@.service"))
    try:
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        pop = poplib.POP3_SSL("127.0.0.1", port, context=context, timeout=30)
        pop.user(USER)
        pop.pass_(PASSWORD)
        check_equal(pop.stat()[0], 3, "STAT through pop3s@.service")
        pop.quit()
    finally:
        process.terminate()
        process.wait()
    print(f"     installed; {USER} logged in through /etc/pam.d/popd with popd@.service's and "
          "pop3s@.service's command lines")

    sh("dpkg", "--purge", "popd")
    for path in FILES:
        check(not os.path.exists(path), f"{path} left after dpkg --purge")
    check_equal(open(SPOOL, "rb").read(), kept, "spool after dpkg --purge")
    check(os.path.exists(f"{account.pw_dir}/.popd-index"), "the user's index after dpkg --purge")
    print("     dpkg --purge: popd and its configuration gone, the spool and the user's files left alone")


if __name__ == "__main__":
    main()
