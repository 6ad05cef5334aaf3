#!/usr/bin/env bash
# Internal helper for scripts/bench/ingest: start BIN on a fresh store, drive it with wrk, print figures.
# Usage: quick-run.sh BIN HOOKS_FILE SECONDS CONNECTIONS
set -euo pipefail
bin=$1 hooks=$2 duration=$3 connections=$4
work=$(mktemp -d)
port=18181
STRIPE_WEBHOOK_SECRET=whsec_bench_secret KOALA_ROUTER_DATABASE="$work/db.sqlite" KOALA_ROUTER_PORT=$port LOG_LEVEL=warning \
  KOALA_ROUTER_ROUTES="$(dirname "$0")/../../routes" "$bin" serve >"$work/router.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 100); do curl -fs "localhost:$port/readyz" >/dev/null 2>&1 && break; sleep 0.05; done
cpu0=$(awk '{print $14+$15}' /proc/$pid/stat)
WRK_THREADS=2 wrk -t2 -c"$connections" -d"${duration}s" --latency -s "$(dirname "$0")/webhooks.lua" "http://127.0.0.1:$port" -- "$hooks" > "$work/wrk.txt" 2>&1
cpu1=$(awk '{print $14+$15}' /proc/$pid/stat)
rss=$(awk '/VmHWM/ {print $2}' /proc/$pid/status)
sleep 2
stored=$(sqlite3 "$work/db.sqlite" "select count(*) from webhooks")
delivered=$(sqlite3 "$work/db.sqlite" "select count(*) from outbox where status = 1")
pending=$(sqlite3 "$work/db.sqlite" "select count(*) from outbox where status = 0")
rate=$(grep Requests/sec "$work/wrk.txt" | awk '{print $2}')
p50=$(grep -E '^\s+50%' "$work/wrk.txt" | awk '{print $2}')
p99=$(grep -E '^\s+99%' "$work/wrk.txt" | awk '{print $2}')
ticks=$(getconf CLK_TCK)
cpu_us=$(awk "BEGIN { if ($stored > 0) printf \"%.0f\", ($cpu1 - $cpu0) / $ticks * 1000000 / $stored; else print 0 }")
echo "requests/s=$rate p50=$p50 p99=$p99 stored=$stored delivered=$delivered pending_after_2s=$pending cpu_us_per_webhook=$cpu_us peak_rss_kb=$rss"
grep -E "non-200" "$work/wrk.txt" || true
