#!/usr/bin/env bash
# Installs PostgreSQL from Debian's packages if it is missing, starts it on
# loopback, and prints a DSN for a role that may create the throwaway test
# databases. Idempotent: safe to run on a machine where it already ran.
set -euo pipefail

if ! command -v pg_ctlcluster >/dev/null 2>&1 || [ -z "$(ls /etc/postgresql 2>/dev/null)" ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq postgresql >&2
fi

version=$(ls /etc/postgresql | sort -V | tail -n1)
if ! pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main"' | grep -q .; then
  pg_createcluster "$version" main >&2
fi
if ! pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main" && $4 == "online"' | grep -q .; then
  pg_ctlcluster "$version" main start >&2
fi

for _ in $(seq 1 30); do
  su postgres -c "pg_isready -q -h 127.0.0.1 -p 5432" && break
  sleep 1
done

# Peer authentication over the local socket, as the postgres superuser.
su postgres -c "psql -q -v ON_ERROR_STOP=1 -d postgres" >&2 <<'SQL'
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'hstest') THEN
    CREATE ROLE hstest LOGIN CREATEDB PASSWORD 'hstest';
  END IF;
END $$;
-- Dropping a test database WITH (FORCE) may have to end an autovacuum
-- worker, which belongs to the superuser.
GRANT pg_signal_backend TO hstest;
SQL

echo "postgres://hstest:hstest@127.0.0.1:5432/postgres?sslmode=disable"
