#!/usr/bin/env bash
# Installs and starts what Certwright needs on a Debian machine, then the Python packages.
# Used by `make run`, `make test` and `.ci/run`. Safe to run again: it only does what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '[bootstrap] %s\n' "$*"; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    say "need root for: $*"; exit 1; fi
}

apt_updated=0
apt_options=()
apt_install() {
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  say "installing Debian packages: ${missing[*]}"
  if [ $apt_updated = 0 ]; then as_root apt-get update -qq || true; apt_updated=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt_options[@]}" "${missing[@]}" >/dev/null
}

# apt_install for a package that ships a daemon this machine only needs the tools of: its
# recommends (prometheus' node exporter, another daemon) are left out, and a policy-rc.d answering
# 101 ("action forbidden", see invoke-rc.d(8), which deb-systemd-invoke honours too) stands in for
# the machine's own during the install, so that nothing is started. The machine's policy-rc.d, or
# its absence, is restored afterwards, also when the install fails or is interrupted. update-rc.d
# then disables what the install enabled at boot (its init script and, through systemctl, its unit).
install_without_starting_services() (
  policy=/usr/sbin/policy-rc.d
  kept=""
  if [ -e "$policy" ]; then kept=$(mktemp); as_root cp -p "$policy" "$kept"; fi
  restore() {
    if [ -n "$kept" ]; then as_root cp -p "$kept" "$policy"; as_root rm -f "$kept"
    else as_root rm -f "$policy"; fi
  }
  trap restore EXIT
  trap 'exit 130' INT TERM
  printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
  as_root chmod 0755 "$policy"
  apt_options=(--no-install-recommends)
  apt_install "$@"
  for pkg in "$@"; do
    as_root update-rc.d "$pkg" disable >/dev/null 2>&1 || say "could not keep $pkg from starting at boot"
  done
)

# pebble: the ACME test CA and its mock DNS; docker-compose (1.29): validates docker/compose.yml in
# the suite and runs it in make docker-test.
command -v pebble >/dev/null && command -v pebble-challtestsrv >/dev/null || apt_install pebble
command -v docker-compose >/dev/null || apt_install docker-compose
# make docker-test: dockerd (Debian's docker.io; the test starts it when none runs), debootstrap for
# the base image, and python3-venv for the virtualenv of Debian's python3 that builds the wheels.
command -v dockerd >/dev/null || apt_install docker.io
apt_install debootstrap python3-venv
# bind9: a real DNS server for the tests of the DNS-01 provider's RFC 2136 updates (named is
# started by the tests themselves, on a free port).
[ -x /usr/sbin/named ] || apt_install bind9
# haproxy: the reference TLS router (make run, the edge tests, bench/edge.py); chromium and
# chromium-driver: the headless browser test of a page served through it, with libnss3-tools'
# certutil making the browser's trust store.
[ -x /usr/sbin/haproxy ] || apt_install haproxy
[ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ] || apt_install chromium chromium-driver
command -v certutil >/dev/null || apt_install libnss3-tools
command -v redis-server >/dev/null || apt_install redis-server
command -v pg_ctlcluster >/dev/null || apt_install postgresql
command -v pg_isready >/dev/null || apt_install postgresql-client
# promtool: the suite checks deploy/prometheus/certwright-alerts.yml with it (tests/deploy/
# test_monitoring_rules.py). It comes in Debian's prometheus package, whose maintainer scripts would
# start a Prometheus server: see install_without_starting_services.
command -v promtool >/dev/null || install_without_starting_services prometheus

if ! pg_isready -q -h 127.0.0.1 -p 5432; then
  say "starting PostgreSQL"
  cluster=$(ls /etc/postgresql | sort -V | tail -n 1)
  as_root pg_ctlcluster --skip-systemctl-redirect "$cluster" main start
  for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
  pg_isready -q -h 127.0.0.1 -p 5432 || { say "PostgreSQL did not start on 127.0.0.1:5432"; exit 1; }
fi

if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  say "starting Redis on 127.0.0.1:6379"
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no
  for _ in $(seq 1 20); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 0.5; done
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  say "creating .venv"
  "$python" -m venv .venv
fi
stamp=.venv/.requirements.sha256
wanted=$(cat requirements.txt requirements-dev.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  say "installing Python packages"
  if ! .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt \
      > .venv/pip-install.log 2>&1; then
    cat .venv/pip-install.log; say "pip install failed"; exit 1
  fi
  echo "$wanted" > "$stamp"
fi

# The project itself, editable: .venv/bin/certwright runs this checkout's cli/ (the project's package
# is the CLI alone, see pyproject.toml). Offline: no dependencies (installed above), no isolated build
# (setuptools is pinned in requirements-dev.txt). Again whenever pyproject.toml changes.
project_stamp=.venv/.project.sha256
wanted=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$project_stamp" 2>/dev/null)" != "$wanted" ] || [ ! -x .venv/bin/certwright ]; then
  say "installing the certwright CLI into .venv"
  if ! .venv/bin/python -m pip install -q --disable-pip-version-check --no-index --no-deps \
      --no-build-isolation -e . > .venv/pip-install-project.log 2>&1; then
    cat .venv/pip-install-project.log; say "installing the project failed"; exit 1
  fi
  echo "$wanted" > "$project_stamp"
fi
