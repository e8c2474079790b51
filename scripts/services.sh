#!/usr/bin/env bash
# Start the local PostgreSQL and Redis the integration tests use, if they are down. Idempotent.
set -u
if command -v pg_isready >/dev/null 2>&1 && ! pg_isready -h 127.0.0.1 -p 5432 -q; then
  echo "starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
  for _ in $(seq 1 30); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 1; done
fi
if command -v redis-cli >/dev/null 2>&1 && ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  echo "starting Redis"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no || true
  for _ in $(seq 1 30); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 1; done
fi
# Debian tools the browser and alert-rule tests use (headless Chromium + chromedriver, promtool), and
# wrk, the closed-loop load of benchmarks/bench_api.py (without it the benchmark falls back to httpx).
missing=""
command -v wrk >/dev/null 2>&1 || missing="$missing wrk"
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
command -v chromedriver >/dev/null 2>&1 || missing="$missing chromium-driver"
command -v promtool >/dev/null 2>&1 || missing="$missing prometheus"
if [ -n "$missing" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian packages:$missing"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing) \
    >/dev/null 2>&1 || echo "could not install$missing: the tests that need them will skip and say so"
fi
exit 0
