#!/bin/sh
# First start: a new cluster in $PGDATA with the superuser POSTGRES_USER (password POSTGRES_PASSWORD,
# scram-sha-256 over the network; local socket connections trusted, for pg_isready and `psql` in the
# container) and the database POSTGRES_DB. Later starts find PG_VERSION and go straight to the server.
set -eu
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  password_file=$(mktemp)
  printf '%s\n' "${POSTGRES_PASSWORD:?}" > "$password_file"
  initdb --username="${POSTGRES_USER:?}" --pwfile="$password_file" --auth-local=trust \
    --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 -D "$PGDATA" > /dev/null
  rm -f "$password_file"
  echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
  # The database, made by a server that listens on the socket only, so nobody connects meanwhile.
  pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start > /dev/null
  createdb --username="$POSTGRES_USER" "${POSTGRES_DB:?}"
  pg_ctl -D "$PGDATA" -m fast -w stop > /dev/null
  echo "postgres-entrypoint: created the cluster and database $POSTGRES_DB"
fi
exec "$@"
