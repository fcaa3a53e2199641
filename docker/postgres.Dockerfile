# PostgreSQL 15 from Debian (in the base image; see devstack/docker_images.py). Build context: docker/.
# docker/postgres-entrypoint.sh creates the cluster on the first start (POSTGRES_USER, _PASSWORD, _DB,
# password authentication over the network), then runs the server in the foreground.

ARG BASE_IMAGE=certwright-base:bookworm
FROM ${BASE_IMAGE}

ENV PATH=/usr/lib/postgresql/15/bin:$PATH \
    PGDATA=/var/lib/postgresql/data

# The data directory is the mount point of a named volume, which takes this directory's owner. The
# cluster Debian's package made at install time is not used.
RUN rm -rf /var/lib/postgresql/15 /etc/postgresql/15 \
    && install -d -o postgres -g postgres -m 0700 /var/lib/postgresql/data \
    && install -d -o postgres -g postgres -m 2775 /var/run/postgresql

COPY postgres-entrypoint.sh /usr/local/bin/postgres-entrypoint
RUN chmod 0755 /usr/local/bin/postgres-entrypoint

USER postgres
EXPOSE 5432
ENTRYPOINT ["/usr/local/bin/postgres-entrypoint"]
CMD ["postgres", "-c", "listen_addresses=*"]
