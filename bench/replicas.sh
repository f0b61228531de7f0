#!/usr/bin/env bash
# artifactstore on PostgreSQL+S3 beside the embedded default, and two
# replicas beside one, in one run. See bench/README.md ("Past one machine").
#
#   bash bench/replicas.sh           256 MiB files, 2,000 small files; writes bench/REPLICAS.md
#   bash bench/replicas.sh --quick   64 MiB, 400 small files, 50 events; writes bench/out/REPLICAS.latest.md
#
# Starts a throwaway PostgreSQL cluster and versitygw (scripts/test-services.sh),
# one embedded server and two servers on one PostgreSQL schema + one S3
# prefix, all on loopback in temp directories; kills every server by its PID
# at exit and runs services_stop. Needs root (PostgreSQL runs as postgres).
set -euo pipefail

QUICK=0
case "${1:-}" in
  --quick) QUICK=1 ;;
  "") ;;
  -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
  *) echo "replicas.sh: unknown argument $1" >&2; exit 2 ;;
esac

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
mkdir -p bench/out
EMB_PORT=18580; PG1_PORT=18581; PG2_PORT=18582
TOKEN=bench-token
log() { printf '[replicas.sh %s] %s\n' "$(date +%T)" "$*" >&2; }
# shellcheck source=lib.sh
source bench/lib.sh
ports_free $EMB_PORT $PG1_PORT $PG2_PORT

TMP=$(mktemp -d /tmp/asreplicas.XXXXXX)
PIDS=()
# shellcheck source=../scripts/test-services.sh
source scripts/test-services.sh
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  services_stop || true
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "building into $TMP/bin"
mkdir -p "$TMP/bin"
go build -o "$TMP/bin/artifactstore" ./cmd/artifactstore
go build -o "$TMP/bin/replicas" ./bench/replicas

log "starting PostgreSQL and versitygw"
services_start
PG_PID=$(head -1 "$PGTMP/data/postmaster.pid")

# A fresh schema and a fresh S3 prefix, shared by both replicas.
SCHEMA="bench_$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
psql -q "$ARTIFACTSTORE_TEST_POSTGRES" -c "CREATE SCHEMA $SCHEMA"
CATALOG="$ARTIFACTSTORE_TEST_POSTGRES&search_path=$SCHEMA"
BUCKET=artifactstore-bench
"$TMP/bin/replicas" mkbucket "http://127.0.0.1:$S3_PORT" "$BUCKET" us-east-1
BLOB="s3://$BUCKET?endpoint=http://127.0.0.1:$S3_PORT&region=us-east-1&prefix=$SCHEMA/"

export ARTIFACTSTORE_TOKENS="bench:$TOKEN"
"$TMP/bin/artifactstore" serve --addr 127.0.0.1:$EMB_PORT --data "$TMP/emb" >"$TMP/emb.log" 2>&1 &
EMB_PID=$!; PIDS+=("$EMB_PID")
"$TMP/bin/artifactstore" serve --addr 127.0.0.1:$PG1_PORT --data "$TMP/pg1" --catalog "$CATALOG" --blob "$BLOB" >"$TMP/pg1.log" 2>&1 &
PG1_PID=$!; PIDS+=("$PG1_PID")
wait_http "http://127.0.0.1:$PG1_PORT/health" "$PG1_PID" pg1   # migrates the schema before replica 2 opens it
"$TMP/bin/artifactstore" serve --addr 127.0.0.1:$PG2_PORT --data "$TMP/pg2" --catalog "$CATALOG" --blob "$BLOB" >"$TMP/pg2.log" 2>&1 &
PG2_PID=$!; PIDS+=("$PG2_PID")
wait_http "http://127.0.0.1:$EMB_PORT/health" "$EMB_PID" emb
wait_http "http://127.0.0.1:$PG2_PORT/health" "$PG2_PID" pg2

if [ "$QUICK" = 1 ]; then
  MD=bench/out/REPLICAS.latest.md; ARGS=(-big 64 -reps 2 -small 400 -events 50)
else
  MD=bench/REPLICAS.md; ARGS=()
fi
PGVER=$("$PGBIN/postgres" --version)
VGWVER=$(go version -m "$VGW" 2>/dev/null | awk '$1=="mod"{print $3; exit}')
{
  echo "# artifactstore on PostgreSQL+S3 and over two replicas"
  echo
  echo "Written by \`bash bench/replicas.sh\`$([ "$QUICK" = 1 ] && echo ' --quick') on $(date -u '+%Y-%m-%d %H:%M UTC'). Only same-run ratios mean anything (see bench/README.md)."
  echo
  echo "| machine | |"
  echo "|---|---|"
  echo "| CPU | $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores |"
  echo "| memory | $(awk '/MemTotal/{printf "%.1f GiB", $2/1048576}' /proc/meminfo) |"
  echo "| kernel | $(uname -r) |"
  echo "| disk | $(df -hT "$TMP" | awk 'NR==2{print $1", "$2", "$3}') |"
  echo "| Go | $(go version | awk '{print $3}') |"
  echo "| PostgreSQL | $PGVER, from scripts/test-services.sh: **fsync off** (\`-F\`), loopback TCP |"
  echo "| versitygw | $VGWVER, posix backend on the same disk, loopback HTTP |"
  echo
  echo "Embedded = \`serve --data\` (SQLite + blob files, fsync'd). PG+S3 = \`serve --catalog postgres://… --blob s3://…\`, a fresh schema and S3 prefix; replica 2 is a second process on the same schema and prefix. Everything, client included, shares $(nproc) cores."
  echo
} >"$MD"

log "running the workloads"
"$TMP/bin/replicas" -emb "http://127.0.0.1:$EMB_PORT" -pg1 "http://127.0.0.1:$PG1_PORT" -pg2 "http://127.0.0.1:$PG2_PORT" \
  -token "$TOKEN" -emb-pid "$EMB_PID" -pg1-pid "$PG1_PID" -pg2-pid "$PG2_PID" -vgw-pid "$S3_PID" -pg-pid "$PG_PID" \
  -md "$MD" -perf "$TMP" "${ARGS[@]}"

# Where the time goes: one extra run of each workload under `perf record -a`
# (all processes, 999 Hz), summarised by process and by function.
if command -v perf >/dev/null; then
  {
    echo
    echo "## Where the time goes (perf record -a, one extra unmeasured run each)"
    for w in ingest-embedded ingest-pgs3 small-embedded small-pgs3; do
      [ -s "$TMP/$w.data" ] || continue
      echo
      echo "### $w"
      echo
      echo '```'
      # Through files, not pipes into head: a SIGPIPE would end the script (pipefail).
      perf report -i "$TMP/$w.data" --stdio --no-children --sort comm -q >"$TMP/$w.comm" 2>/dev/null || true
      perf report -i "$TMP/$w.data" --stdio --no-children --sort comm,sym -q >"$TMP/$w.sym" 2>/dev/null || true
      awk 'NF && $1+0 >= 1' "$TMP/$w.comm" | sed -n 1,8p
      echo
      awk 'NF' "$TMP/$w.sym" | sed -n 1,18p
      echo '```'
    done
  } >>"$MD"
fi
log "wrote $MD"
