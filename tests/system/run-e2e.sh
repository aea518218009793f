#!/bin/sh
# Runs the end-to-end tests against the given popd binary as the current
# user and, when that is root, once more as an unprivileged user (nobody),
# so that both the privilege drop and the plain-user mode are exercised;
# then what a login trusts of the index; Maildirs, with the delivery agents
# and servers that share them; then the crash-safety tests, with
# the fault-injection shim given second; then real clients, the spawners,
# the unique-ids of other servers and the Debian package.
set -e
popd=$(realpath "$1")
shim=$(realpath "$2")
pam_module=$(realpath "$3")
here=$(dirname "$0")
# Sanitizer runtimes must tolerate the cwrap libraries preloaded before them.
export ASAN_OPTIONS="${ASAN_OPTIONS:-verify_asan_link_order=0:detect_leaks=1}"
/usr/bin/python3 "$here/e2e.py" "$popd"
if [ "$(id -u)" = 0 ]; then
  dir=$(mktemp -d /tmp/popd-e2e-unprivileged.XXXXXX)
  trap 'rm -rf "$dir"' EXIT
  cp "$popd" "$here/e2e.py" "$here/support.py" "$dir/"
  chmod -R a+rX "$dir"
  (cd "$dir" && setpriv --reuid=nobody --regid=nogroup --clear-groups /usr/bin/python3 "$dir/e2e.py" "$dir/popd")
fi
/usr/bin/python3 "$here/index.py" "$popd"
/usr/bin/python3 "$here/maildir.py" "$popd" "$shim"
/usr/bin/python3 "$here/maildir_peers.py" "$popd"
/usr/bin/python3 "$here/virtual.py" "$popd"
/usr/bin/python3 "$here/policy.py" "$popd"
/usr/bin/python3 "$here/crash.py" "$popd" "$shim"
/usr/bin/python3 "$here/recovery.py" "$popd" "$shim"
/usr/bin/python3 "$here/security.py" "$popd"
/usr/bin/python3 "$here/hardening.py" "$popd" "$shim" "$pam_module"
/usr/bin/python3 "$here/pipelining.py" "$popd"
/usr/bin/python3 "$here/clients.py" "$popd"
/usr/bin/python3 "$here/deploy.py" "$popd"
/usr/bin/python3 "$here/migration.py" "$popd"
# The Debian package, built, installed, used and purged (as root only). It
# builds its own binary: once, not again for the sanitizer run.
case "$popd" in
  */sanitize/*) ;;
  *) /usr/bin/python3 "$here/package.py" ;;
esac
