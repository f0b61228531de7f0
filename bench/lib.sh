# shellcheck shell=bash
# Shared by bench/run.sh and bench/replicas.sh (sourced). Both define log()
# and TMP, the run's temp directory holding each server's NAME.log.

# ports_free PORT... exits unless every port is free: a server left on one
# would answer wait_http and be measured in place of ours.
ports_free() {
  local port
  for port in "$@"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      log "port $port is in use (ss -ltnp 'sport = :$port' shows by what): stop it and run again"
      exit 1
    fi
  done
}

# wait_http URL PID NAME waits until URL answers, or exits with NAME's log
# when PID dies or 30 s pass.
wait_http() {
  local i
  for i in $(seq 1 300); do
    curl -fs -o /dev/null "$1" && return 0
    kill -0 "$2" 2>/dev/null || break
    sleep 0.1
  done
  log "$3 did not become ready; its log:"; cat "$TMP/$3.log" >&2 || true; exit 1
}
