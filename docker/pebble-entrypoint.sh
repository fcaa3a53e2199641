#!/bin/sh
# Publishes into the shared volume mounted at /var/lib/pebble-ca, for the app containers (mounted
# read-only there):
# - ca.pem: the CA of Pebble's HTTPS listener, generated when the image was built (ACME_CA_BUNDLE).
#   Copied at every start, so the shared CA follows a rebuilt image.
# - roots.pem: the root that signs the certificates Pebble issues (EXTRA_TRUSTED_ROOTS). Pebble makes
#   a new one at every start; each is appended, so what an earlier start issued still verifies.
# Then waits on the command (pebble), which runs in the background only so that its root can be
# fetched from its management API once it answers.
set -eu
shared=/var/lib/pebble-ca
cp /etc/pebble/tls/ca.pem "$shared/ca.pem.tmp"
chmod 0644 "$shared/ca.pem.tmp"
mv -f "$shared/ca.pem.tmp" "$shared/ca.pem"

"$@" &
pebble_pid=$!
trap 'kill -TERM "$pebble_pid"' TERM INT

root=$(mktemp)
tries=0
until curl -fsS --cacert /etc/pebble/tls/ca.pem -o "$root" https://127.0.0.1:15000/roots/0 2>/dev/null; do
  tries=$((tries + 1))
  if [ "$tries" -ge 100 ] || ! kill -0 "$pebble_pid" 2>/dev/null; then
    echo "pebble-entrypoint: Pebble's management API never answered" >&2
    kill -TERM "$pebble_pid" 2>/dev/null || true
    exit 1
  fi
  sleep 0.2
done
touch "$shared/roots.pem"
cat "$shared/roots.pem" "$root" > "$shared/roots.pem.tmp"
chmod 0644 "$shared/roots.pem.tmp"
mv -f "$shared/roots.pem.tmp" "$shared/roots.pem"
rm -f "$root"
echo "pebble-entrypoint: this Pebble's root added to $shared/roots.pem"

# `wait` returns early when a trapped signal arrives; wait again for Pebble's own exit status.
status=0
wait "$pebble_pid" || status=$?
if kill -0 "$pebble_pid" 2>/dev/null; then wait "$pebble_pid" || status=$?; fi
exit "$status"
