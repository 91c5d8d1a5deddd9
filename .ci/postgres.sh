#!/usr/bin/env bash
# Makes a PostgreSQL server available for the store tests on 127.0.0.1:5432 and prints the
# value to export, for example:
#
#   export "$(bash .ci/postgres.sh)"   # sets TETHER_TEST_POSTGRES
#
# It installs PostgreSQL (Debian packages) when missing, starts the cluster when it is not
# running, lets the `postgres` user in over loopback without a password (a test server only),
# and creates the test database when missing. Progress goes to stderr; stdout carries only the
# `TETHER_TEST_POSTGRES=...` line.
set -euo pipefail

host=127.0.0.1
port=5432
database=${TETHER_TEST_DATABASE:-tether_test}
url="postgres://postgres@${host}:${port}/${database}"

say() { echo "postgres.sh: $*" >&2; }

if ! command -v pg_ctlcluster >/dev/null 2>&1 || ! ls -d /etc/postgresql/*/main >/dev/null 2>&1; then
  say "installing PostgreSQL"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq postgresql >&2
fi

version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)
if [ -z "$version" ]; then
  say "no PostgreSQL cluster under /etc/postgresql"
  exit 1
fi

if ! pg_isready -q -h "$host" -p "$port"; then
  say "starting cluster $version/main"
  pg_ctlcluster --skip-systemctl-redirect "$version" main start >&2 || true
fi

for _ in $(seq 1 60); do
  pg_isready -q -h "$host" -p "$port" && break
  sleep 1
done
if ! pg_isready -q -h "$host" -p "$port"; then
  say "PostgreSQL does not accept connections on $host:$port"
  exit 1
fi

psql_admin() { psql -h "$host" -p "$port" -U postgres -v ON_ERROR_STOP=1 -qtA "$@"; }

if ! psql_admin -w -d postgres -c 'select 1' >/dev/null 2>&1; then
  # A fresh Debian cluster asks for a password over TCP: trust loopback for this test server.
  hba="/etc/postgresql/$version/main/pg_hba.conf"
  say "trusting the postgres user on $host in $hba"
  sed -i "1i host all postgres ${host}/32 trust" "$hba"
  pg_ctlcluster --skip-systemctl-redirect "$version" main reload >&2
  sleep 1
fi

if [ "$(psql_admin -w -d postgres -c "select 1 from pg_database where datname = '${database}'")" != "1" ]; then
  say "creating database $database"
  psql_admin -w -d postgres -c "create database ${database}" >&2
fi

echo "TETHER_TEST_POSTGRES=${url}"
