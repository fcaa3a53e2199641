#!/bin/sh
# The router host's two processes: HAProxy in the background (daemon mode), then the edge agent in
# the foreground as the container's main process. The configuration is rendered here, at start, so
# CERTWRIGHT_WEB (the web processes that answer HTTP-01) can change without a rebuild. The token is
# the file the router-token service wrote (CERTWRIGHT_EDGE_TOKEN_FILE); the agent never logs it.
set -eu
config=/etc/haproxy/certwright/haproxy.cfg
crt_list=/etc/haproxy/certwright/crt-list
socket=/run/haproxy/admin.sock
# The crt-list, the PEMs and the agent's store live in the container: after a restart HAProxy starts
# with what the agent wrote last and the agent resumes from its cursor; a new container starts empty
# and the agent takes a snapshot.
touch "$crt_list"
certwright-edge haproxy-config --web "${CERTWRIGHT_WEB:?}" --socket "$socket" --crt-list "$crt_list" \
    --log '' > "$config"
haproxy -c -q -f "$config"
haproxy -D -p /run/haproxy/haproxy.pid -f "$config"
exec certwright-edge run --url "${CERTWRIGHT_FEED_URL:?}" --token-file "${CERTWRIGHT_EDGE_TOKEN_FILE:?}" \
    --store /var/lib/certwright-edge/store --driver haproxy --haproxy-socket "$socket" \
    --haproxy-crt-list "$crt_list" --haproxy-cert-dir /etc/haproxy/certwright/certs
