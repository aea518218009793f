#!/bin/sh
# make demo: pipes a scripted session into ./popd against a copy of
# demo/sample.mbox, with a demo account (user "demo", password "demo") that
# exists only for this run: PAM through libpam-wrapper's pam_matrix, the
# account through libnss-wrapper. As root, popd switches to the demo user's
# uid just as it would for a real user.
set -e
popd=$(realpath "${1:-./popd}")
here=$(cd "$(dirname "$0")" && pwd)
lib=/usr/lib/x86_64-linux-gnu
dir=$(mktemp -d /tmp/popd-demo.XXXXXX)
trap 'rm -rf "$dir"' EXIT
chmod 755 "$dir"
mkdir "$dir/pam" "$dir/pam-runtime" "$dir/mail" "$dir/home"
chmod 1777 "$dir/pam-runtime" "$dir/mail"
uid=$(id -u); gid=$(id -g)
[ "$uid" = 0 ] && uid=12345 gid=12345
echo "demo:demo:popd" >"$dir/passdb"
for kind in auth account session; do
  echo "$kind required $lib/pam_wrapper/pam_matrix.so passdb=$dir/passdb"
done >"$dir/pam/popd"
# nobody: the account of popd's unprivileged pre-login process.
printf 'demo:x:%s:%s:Demo:%s/home:/bin/sh\nnobody:x:65534:65534::/nonexistent:/bin/false\n' \
  "$uid" "$gid" "$dir" >"$dir/passwd"
printf 'demo:x:%s:\nnogroup:x:65534:\n' "$gid" >"$dir/group"
cp "$here/sample.mbox" "$dir/mail/demo"
chmod 600 "$dir/mail/demo"
[ "$(id -u)" = 0 ] && chown "$uid:$gid" "$dir/mail/demo" "$dir/home"

script='CAPA\r\nUSER demo\r\nPASS demo\r\nSTAT\r\nLIST\r\nUIDL\r\nTOP 2 1\r\nRETR 1\r\nDELE 3\r\nQUIT\r\n'
echo "=== The client sends:"
printf "$script" | sed 's/\r$//; s/^PASS .*/PASS ****/'
echo
echo "=== popd answers:"
printf "$script" | env LD_PRELOAD="$lib/libpam_wrapper.so:$lib/libnss_wrapper.so" \
  PAM_WRAPPER=1 PAM_WRAPPER_SERVICE_DIR="$dir/pam" PAM_WRAPPER_RUNTIME_DIR="$dir/pam-runtime" \
  NSS_WRAPPER_PASSWD="$dir/passwd" NSS_WRAPPER_GROUP="$dir/group" \
  "$popd" --mailbox "$dir/mail/%u" --privsep-dir "$dir/empty" 2>/dev/null | sed 's/\r$//'
echo
echo "=== The mailbox afterwards: $(grep -c '^From ' "$dir/mail/demo") of 3 messages left (DELE 3 was committed by QUIT)"
