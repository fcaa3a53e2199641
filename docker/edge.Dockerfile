# A router host: HAProxy (Debian's 2.6, from the base image) driven by Certwright's edge agent,
# `certwright-edge`, installed as on any router host (`pip install certwright`, here from the wheels
# in build/wheels/ and build/project/, no index). Build context: the repository root (see
# devstack/docker_images.py).
# docker/edge-entrypoint.sh renders haproxy.cfg (`certwright-edge haproxy-config`), starts HAProxy,
# then runs the agent against the feed service.

ARG BASE_IMAGE=certwright-base:bookworm

FROM ${BASE_IMAGE} AS builder
ENV PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv /opt/edge
COPY build/wheels /tmp/wheels
COPY build/project /tmp/project
RUN /opt/edge/bin/pip install --no-index --find-links /tmp/wheels --find-links /tmp/project certwright

FROM ${BASE_IMAGE} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/edge/bin:$PATH

# HAProxy and the agent run as one unprivileged user (the agent needs the runtime API's socket, mode
# 600), uid 10001 like the app image, so the token the router-token service writes is readable here.
# Docker lets unprivileged processes bind ports below 1024 in a container (ip_unprivileged_port_start).
RUN groupadd --system --gid 10001 certwright \
    && useradd --system --uid 10001 --gid certwright --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin certwright \
    && install -d -o certwright -g certwright -m 0755 /run/haproxy /etc/haproxy/certwright \
       /etc/haproxy/certwright/certs /var/lib/certwright-edge

COPY --from=builder /opt/edge /opt/edge
COPY docker/edge-entrypoint.sh /usr/local/bin/edge-entrypoint
RUN chmod 0755 /usr/local/bin/edge-entrypoint

USER certwright:certwright

# 443: TLS for every name the agent serves; 80: HTTP-01 to Certwright's web, the rest redirected.
EXPOSE 80 443

ENTRYPOINT ["/usr/local/bin/edge-entrypoint"]
