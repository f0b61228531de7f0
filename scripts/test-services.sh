# shellcheck shell=bash
# Real servers on loopback for the backend tests: a throwaway PostgreSQL
# cluster and versitygw (an S3-compatible gateway on local disk). Source this
# file, then `services_start`; it exports ARTIFACTSTORE_TEST_POSTGRES,
# ARTIFACTSTORE_TEST_S3 and the AWS credentials the tests read, and
# `services_stop` removes everything. Both servers get temp directories and
# are stopped by PID; nothing else on the machine is touched.

VERSITYGW_VERSION=v1.8.0
PG_PORT=${PG_PORT:-54329}
S3_PORT=${S3_PORT:-7070}

pg_start() {
  if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
  fi
  PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  PGTMP=$(mktemp -d /tmp/artifactstore-pg.XXXXXX)
  chown postgres:postgres "$PGTMP"   # initdb refuses root
  runuser -u postgres -- "$PGBIN/initdb" -D "$PGTMP/data" -U postgres -A trust -E UTF8 \
    --locale=C.UTF-8 --no-sync >"$PGTMP/initdb.log" 2>&1 || { cat "$PGTMP/initdb.log" >&2; return 1; }
  # Tests only: fsync off. max_connections up for parallel test packages.
  runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGTMP/data" -l "$PGTMP/server.log" -w -t 60 \
    -o "-F -p $PG_PORT -k $PGTMP -c listen_addresses=127.0.0.1 -c max_connections=300" \
    start >/dev/null || { cat "$PGTMP/server.log" >&2; return 1; }
  runuser -u postgres -- "$PGBIN/createdb" -h "$PGTMP" -p "$PG_PORT" -U postgres artifactstore
  export ARTIFACTSTORE_TEST_POSTGRES="postgres://postgres@127.0.0.1:${PG_PORT}/artifactstore?sslmode=disable"
}

pg_stop() {
  [ -n "${PGTMP:-}" ] || return 0
  runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGTMP/data" -m immediate -w stop >/dev/null 2>&1 || true
  rm -rf "${PGTMP:?}"; PGTMP=
}

s3_start() {
  VGW="$(go env GOPATH)/bin/versitygw"
  # Cached by version: the cold build takes one to two minutes.
  go version -m "$VGW" 2>/dev/null | grep -q "mod[[:space:]]*github.com/versity/versitygw[[:space:]]*$VERSITYGW_VERSION" \
    || CGO_ENABLED=0 go install "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION"
  S3TMP=$(mktemp -d /tmp/artifactstore-s3.XXXXXX); mkdir -p "$S3TMP/data"
  "$VGW" --access ci-access-key --secret ci-secret-key --region us-east-1 \
    --port "127.0.0.1:$S3_PORT" --health /health --quiet posix "$S3TMP/data" >"$S3TMP/server.log" 2>&1 &
  S3_PID=$!
  for _ in $(seq 150); do
    curl -fs -o /dev/null "http://127.0.0.1:$S3_PORT/health" && break
    kill -0 "$S3_PID" 2>/dev/null || { cat "$S3TMP/server.log" >&2; return 1; }
    sleep 0.1
  done
  export ARTIFACTSTORE_TEST_S3="s3://artifactstore-test?endpoint=http://127.0.0.1:$S3_PORT&region=us-east-1"
  export AWS_ACCESS_KEY_ID=ci-access-key AWS_SECRET_ACCESS_KEY=ci-secret-key
}

s3_stop() {
  [ -n "${S3_PID:-}" ] || return 0
  kill -TERM "$S3_PID" 2>/dev/null; wait "$S3_PID" 2>/dev/null
  rm -rf "${S3TMP:?}"; S3_PID=
}

services_start() { pg_start && s3_start; }
services_stop() { s3_stop; pg_stop; }
