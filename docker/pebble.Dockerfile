# Pebble (Let's Encrypt's test ACME server) and pebble-challtestsrv (its mock DNS server), both from
# Debian's `pebble` package (2.4.0 in bookworm, in the base image; see devstack/docker_images.py):
# /usr/bin/pebble and /usr/bin/pebble-challtestsrv. Build context: the docker/ directory.
# Development and testing only: Pebble is not a real CA.
#
# The package ships no certificate for Pebble's own HTTPS listener, so the build generates one: a
# throwaway CA (whose private key is deleted as soon as it has signed) and a leaf for `pebble`,
# `localhost`, 127.0.0.1 and ::1. At start-up the entrypoint copies the CA into the volume mounted at
# /var/lib/pebble-ca, which the app containers mount read-only as their ACME_CA_BUNDLE, and adds the
# root that signs what Pebble issues (a new one at every start, served at :15000/roots/0) to
# roots.pem there, the app's EXTRA_TRUSTED_ROOTS.

ARG BASE_IMAGE=certwright-base:bookworm
FROM ${BASE_IMAGE}

RUN groupadd --system --gid 10002 pebble \
    && useradd --system --uid 10002 --gid pebble --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin pebble

RUN set -eu; \
    mkdir -p /etc/pebble/tls /var/lib/pebble-ca; \
    cd /etc/pebble/tls; \
    openssl req -x509 -new -noenc -newkey ec -pkeyopt ec_paramgen_curve:P-256 -sha256 -days 3650 \
      -subj "/CN=Certwright development CA for the Pebble listener" \
      -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
      -addext "keyUsage=critical,keyCertSign,cRLSign" \
      -keyout ca-key.pem -out ca.pem; \
    openssl req -new -noenc -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
      -subj "/CN=pebble" -keyout key.pem -out leaf.csr; \
    printf '%s\n' \
      "basicConstraints=critical,CA:FALSE" \
      "keyUsage=critical,digitalSignature" \
      "extendedKeyUsage=serverAuth" \
      "subjectAltName=DNS:pebble,DNS:localhost,IP:127.0.0.1,IP:::1" \
      "subjectKeyIdentifier=hash" \
      "authorityKeyIdentifier=keyid:always" > leaf.ext; \
    openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca-key.pem -set_serial "0x$(openssl rand -hex 16)" \
      -days 825 -sha256 -extfile leaf.ext -out cert.pem; \
    openssl verify -x509_strict -purpose sslserver -CAfile ca.pem cert.pem; \
    rm -f ca-key.pem leaf.csr leaf.ext; \
    chown pebble:pebble key.pem /var/lib/pebble-ca; \
    chmod 0600 key.pem; \
    chmod 0644 ca.pem cert.pem

COPY pebble-config.json /etc/pebble/pebble-config.json
COPY pebble-entrypoint.sh /usr/local/bin/pebble-entrypoint
RUN chmod 0755 /usr/local/bin/pebble-entrypoint

# No random 0-15 s sleep before each validation: the demo and the tests do not wait for nothing.
ENV PEBBLE_VA_NOSLEEP=1

USER pebble:pebble

# 14000: ACME (HTTPS), 15000: Pebble's management API; challtestsrv: 8053 (DNS), 8055 (management).
EXPOSE 14000 15000 8053/udp 8053/tcp 8055

ENTRYPOINT ["/usr/local/bin/pebble-entrypoint"]
CMD ["pebble", "-config", "/etc/pebble/pebble-config.json", "-strict=false"]
