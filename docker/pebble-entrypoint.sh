#!/bin/sh
# Publishes the CA of Pebble's HTTPS listener (generated when the image was built) into the shared
# volume mounted at /var/lib/pebble-ca, then runs the command (pebble). The app containers mount the
# same volume read-only and point ACME_CA_BUNDLE at /var/lib/pebble-ca/ca.pem. Copying at every
# start, rather than relying on the volume's first population, keeps the shared CA in step with the
# image after `docker compose build pebble` regenerates it.
set -eu
cp /etc/pebble/tls/ca.pem /var/lib/pebble-ca/ca.pem.tmp
chmod 0644 /var/lib/pebble-ca/ca.pem.tmp
mv -f /var/lib/pebble-ca/ca.pem.tmp /var/lib/pebble-ca/ca.pem
exec "$@"
