#!/usr/bin/env bash
# Benchmarks artifactstore against the limit of this machine and against real
# peers, in one run, and prints one table. See bench/README.md.
#
#   bash bench/run.sh             full run (1 GiB files, 10,000 small files, 1M packages); writes bench/RESULTS.md
#   bash bench/run.sh --quick     smoke run (64 MiB, 1,000 files, 100k packages); writes nothing in the repository
#   bash bench/run.sh --profile   serve with --debug-addr and keep one CPU profile per artifactstore workload
#                                 in bench/out/prof (add --quick for a fast one); writes no RESULTS.md
#   bash bench/run.sh --only ingest,session   only these phases (see bench/README.md)
#
# Every server runs on loopback in a temp directory and is killed by its PID
# at exit. Needs root for apt-get (nginx-light, docker-registry) when they
# are missing, and for /proc/PID/clear_refs of the servers.
set -euo pipefail

QUICK=0; PROFILE=0; ONLY=""; KEEP=0
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --profile) PROFILE=1 ;;
    --only) ONLY="$2"; shift ;;
    --only=*) ONLY="${1#--only=}" ;;
    --keep) KEEP=1 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH="$ROOT/bench"
OUT="$BENCH/out"
mkdir -p "$OUT"
cd "$ROOT"

AS_PORT=18480; LIST_PORT=18481; IDEAL_PORT=18482; NGINX_PORT=18483; REG_PORT=15000
PROF_PORT=18490; LIST_PROF_PORT=18491
TOKEN=bench-token
if [ "$QUICK" = 1 ]; then LIST_N=100000; else LIST_N=1000000; fi

log() { printf '[run.sh %s] %s\n' "$(date +%T)" "$*" >&2; }

# --- what we need -----------------------------------------------------------
need=()
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v docker-registry >/dev/null || need+=(docker-registry)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

TMP=$(mktemp -d /tmp/asbench.XXXXXX)
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ "$KEEP" = 1 ]; then log "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- build ------------------------------------------------------------------
log "building into $TMP/bin"
mkdir -p "$TMP/bin"
go build -o "$TMP/bin/artifactstore" ./cmd/artifactstore
go build -o "$TMP/bin/ideal" ./bench/ideal
go build -o "$TMP/bin/driver" ./bench/driver
go build -o "$TMP/bin/mkcatalog" ./bench/mkcatalog

# --- the large catalog for the listing benchmark ----------------------------
# Built once per schema and builder version (about 40 s for 1M packages) and
# copied into the run's data directory.
CACHE=${ARTIFACTSTORE_BENCH_CACHE:-/var/tmp/artifactstore-bench}
KEY=$(cat catalog/sqlite/migrations/*.sql bench/mkcatalog/main.go | sha256sum | cut -c1-16)
CAT="$CACHE/catalog-$LIST_N-$KEY.db"
mkdir -p "$CACHE" "$TMP/aslist"
if [ ! -s "$CAT" ]; then
  log "building a catalog of $LIST_N packages (cached in $CACHE)"
  rm -rf "$TMP/mkcat"
  "$TMP/bin/mkcatalog" -dir "$TMP/mkcat" -n "$LIST_N" -tenant bench
  rm -f "$CACHE"/catalog-"$LIST_N"-*.db
  mv "$TMP/mkcat/catalog.db" "$CAT.part" && mv "$CAT.part" "$CAT"
fi
cp --reflink=auto "$CAT" "$TMP/aslist/catalog.db"

# --- servers ----------------------------------------------------------------
. "$BENCH/lib.sh"
ports_free $AS_PORT $LIST_PORT $IDEAL_PORT $NGINX_PORT $REG_PORT $PROF_PORT $LIST_PROF_PORT

# With --profile the same servers also open a debug port (serve
# --debug-addr) through which the driver takes one CPU profile per workload.
PROF_DIR="$OUT/prof"
AS_DEBUG=(); LIST_DEBUG=()
if [ "$PROFILE" = 1 ]; then
  rm -rf "$PROF_DIR"; mkdir -p "$PROF_DIR"
  AS_DEBUG=(--debug-addr 127.0.0.1:$PROF_PORT)
  LIST_DEBUG=(--debug-addr 127.0.0.1:$LIST_PROF_PORT)
fi
"$TMP/bin/artifactstore" serve --addr 127.0.0.1:$AS_PORT --data "$TMP/as" --tokens bench:$TOKEN "${AS_DEBUG[@]}" >"$TMP/artifactstore.log" 2>&1 &
AS_PID=$!
PIDS+=("$AS_PID")
"$TMP/bin/artifactstore" serve --addr 127.0.0.1:$LIST_PORT --data "$TMP/aslist" --tokens bench:$TOKEN "${LIST_DEBUG[@]}" >"$TMP/aslist.log" 2>&1 &
LIST_PID=$!
PIDS+=("$LIST_PID")

"$TMP/bin/ideal" -addr 127.0.0.1:$IDEAL_PORT -dir "$TMP/ideal" >"$TMP/ideal.log" 2>&1 &
IDEAL_PID=$!
PIDS+=("$IDEAL_PID")

# nginx serves bench/ideal's files directory: the very same files.
mkdir -p "$TMP/nginx" "$TMP/ideal/files"
cat >"$TMP/nginx/nginx.conf" <<CONF
daemon off;
user root;
worker_processes 2;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  # tcp_nopush (TCP_CORK) stalls keep-alive Range answers for ~40 ms (delayed ACK); off is the default
  tcp_nopush off;
  keepalive_requests 1000000;
  default_type application/octet-stream;
  types { }
  client_body_temp_path $TMP/nginx/body;
  proxy_temp_path $TMP/nginx/proxy;
  fastcgi_temp_path $TMP/nginx/fastcgi;
  uwsgi_temp_path $TMP/nginx/uwsgi;
  scgi_temp_path $TMP/nginx/scgi;
  server {
    listen 127.0.0.1:$NGINX_PORT;
    root $TMP/ideal/files;
    location / { }
    location = /health { return 200 "ok"; }
  }
}
CONF
"$NGINX" -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -e "$TMP/nginx.log" &
NGINX_PID=$!
PIDS+=("$NGINX_PID")

# The CNCF distribution registry: not the package's config (all interfaces,
# auth on) but our own, on loopback (as /work/shared/recipes/registry.sh).
mkdir -p "$TMP/registry"
cat >"$TMP/registry/config.yml" <<YML
version: 0.1
log: {level: warn, accesslog: {disabled: true}}
storage:
  filesystem: {rootdirectory: $TMP/registry/data}
  delete: {enabled: true}
  maintenance: {uploadpurging: {enabled: false}}
http: {addr: "127.0.0.1:$REG_PORT", secret: bench-only-not-secret}
health: {storagedriver: {enabled: false}}
YML
docker-registry serve "$TMP/registry/config.yml" >"$TMP/registry.log" 2>&1 &
REG_PID=$!
PIDS+=("$REG_PID")

wait_http "http://127.0.0.1:$AS_PORT/health" "$AS_PID" artifactstore
wait_http "http://127.0.0.1:$LIST_PORT/health" "$LIST_PID" aslist
wait_http "http://127.0.0.1:$IDEAL_PORT/health" "$IDEAL_PID" ideal
wait_http "http://127.0.0.1:$NGINX_PORT/health" "$NGINX_PID" nginx
wait_http "http://127.0.0.1:$REG_PORT/v2/" "$REG_PID" registry
log "servers up: artifactstore $AS_PID, artifactstore(1M) $LIST_PID, ideal $IDEAL_PID, nginx $NGINX_PID, registry $REG_PID"

# --- run --------------------------------------------------------------------
args=(
  -as "http://127.0.0.1:$AS_PORT" -as-pid "$AS_PID" -token "$TOKEN"
  -list "http://127.0.0.1:$LIST_PORT" -list-pid "$LIST_PID" -list-n "$LIST_N" -list-db "$TMP/aslist/catalog.db"
  -ideal "http://127.0.0.1:$IDEAL_PORT" -ideal-pid "$IDEAL_PID"
  -nginx "http://127.0.0.1:$NGINX_PORT" -nginx-pid "$NGINX_PID"
  -registry "http://127.0.0.1:$REG_PORT" -registry-pid "$REG_PID"
  -scratch "$TMP" -clk-tck "$(getconf CLK_TCK)"
  -out "$TMP/results.md" -json "$OUT/results.json"
)
[ "$QUICK" = 1 ] && args+=(-quick)
[ -n "$ONLY" ] && args+=(-only "$ONLY")
[ "$PROFILE" = 1 ] && args+=(-prof "http://127.0.0.1:$PROF_PORT" -list-prof "http://127.0.0.1:$LIST_PROF_PORT" -prof-dir "$PROF_DIR")
"$TMP/bin/driver" "${args[@]}"

# --- record -----------------------------------------------------------------
mode=full; [ "$QUICK" = 1 ] && mode=quick; [ "$PROFILE" = 1 ] && mode="$mode, profiling (serve --debug-addr)"
[ -n "$ONLY" ] && mode="$mode, only $ONLY"
{
  echo "# artifactstore benchmark results"
  echo
  echo "Produced by \`bash bench/run.sh\` ($mode run). Only ratios measured in the same run mean anything:"
  echo "fsync latency on this kind of machine drifts by up to 3× over tens of minutes."
  echo
  echo "| | |"
  echo "|---|---|"
  echo "| date | $(date -u '+%Y-%m-%d %H:%M UTC') |"
  dirty=$(git status --porcelain -- . ':!bench' 2>/dev/null | awk '{print $2}' | paste -sd, - | sed 's/,/, /g')
  echo "| commit | $(git rev-parse --short HEAD 2>/dev/null || echo ?)${dirty:+ plus uncommitted changes to $dirty} |"
  echo "| CPU | $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores |"
  echo "| memory | $(free -h | awk '/^Mem:/{print $2" total, "$7" available"}') |"
  echo "| kernel | $(uname -r) |"
  echo "| disk | $(df -hT "$TMP" | awk 'NR==2{print $1", "$2", "$3}') |"
  echo "| Go | $(go version | cut -d' ' -f3) |"
  echo "| nginx | $("$NGINX" -v 2>&1 | cut -d/ -f2) |"
  echo "| docker-registry | $(dpkg-query -W -f '${Version}' docker-registry 2>/dev/null) |"
  echo
  cat "$TMP/results.md"
} >"$OUT/RESULTS.latest.md"
if [ "$QUICK" = 0 ] && [ "$PROFILE" = 0 ] && [ -z "$ONLY" ]; then
  cp "$OUT/RESULTS.latest.md" "$BENCH/RESULTS.md"
  log "wrote bench/RESULTS.md"
else
  log "wrote bench/out/RESULTS.latest.md"
fi
if [ "$PROFILE" = 1 ]; then
  log "CPU profiles of artifactstore per workload:"
  for w in $(ls "$PROF_DIR" | sed 's/\.[0-9]*\.pprof$//' | sort -u); do
    echo
    echo "=== $w"
    go tool pprof -top -nodecount=30 "$TMP/bin/artifactstore" "$PROF_DIR/$w".*.pprof 2>/dev/null | sed -n '1,40p'
  done | tee "$OUT/profiles.txt"
  cp "$TMP/bin/artifactstore" "$PROF_DIR/artifactstore.bin"
fi
