#!/usr/bin/env bash
# Runs the README's curl walkthrough, exactly as written, against a fresh
# server started the way `make dev` starts it, and checks what it prints.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v jq >/dev/null || { apt-get update -qq && apt-get install -y -qq jq >/dev/null; }
command -v curl >/dev/null || { apt-get update -qq && apt-get install -y -qq curl >/dev/null; }

work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -rf "$work"' EXIT
go build -o "$work/artifactstore" ./cmd/artifactstore
ARTIFACTSTORE_TOKENS=dev:dev-token ARTIFACTSTORE_ANON_READ=true \
  "$work/artifactstore" serve --data "$work/data" >"$work/server.log" 2>&1 &
pid=$!
for _ in $(seq 100); do curl -fs -o /dev/null http://127.0.0.1:8480/health && break; sleep 0.1; done

awk '/^## Five minutes with curl/{f=1} f&&/^```sh/{c=1;next} c&&/^```/{exit} c' README.md >"$work/walkthrough.sh"
test -s "$work/walkthrough.sh"
(cd "$work" && bash -euo pipefail walkthrough.sh) >"$work/out.txt"

out="$work/out.txt"
digest=$(grep -m1 -o '^sha256:[0-9a-f]\{64\}$' "$out")
grep -q "^${digest#sha256:}  -$" "$out" || { echo "the manifest bytes do not hash to the manifest digest"; cat "$out"; exit 1; }
grep -qx '100' "$out" || { echo "the ranged download did not give 100 bytes"; cat "$out"; exit 1; }
jq -se '.[-1].events | map(.type) == ["package.created","file.added","file.added","package.finalized"]' \
  <(sed -n '/^{$/,$p' "$out") >/dev/null || { echo "unexpected events"; cat "$out"; exit 1; }
echo "README walkthrough: ok (manifest $digest)"
