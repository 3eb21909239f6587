#!/usr/bin/env bash
# modegate benchmark: one command, loopback only, every run bounded in time.
#
#   bash bench/run.sh           full run (< 15 min on a fresh clone); writes bench/results.md + .json
#   bash bench/run.sh --smoke   seconds-long run into bench/work/bench/ that checks the pipeline (CI)
#
# Installs what it needs: nginx (with its lua module and lua-cjson), HAProxy and wrk from Debian, and for the full run valgrind
# (instruction counts) and oha (open-loop load with latency correction) from crates.io.
# Contenders are pinned with taskset: see bench/results.md. MODEGATE_BASE_BIN=path measures an
# earlier build beside this one (the before/after columns).
set -euo pipefail
cd "$(dirname "$0")/.."

OHA_VERSION="1.16.0"
smoke=0
for arg in "$@"; do
  case "$arg" in
    --smoke) smoke=1 ;;
    *) echo "usage: bash bench/run.sh [--smoke]" >&2; exit 2 ;;
  esac
done

need=()
command -v nginx >/dev/null || need+=(nginx-light)
command -v wrk >/dev/null || need+=(wrk)
command -v haproxy >/dev/null || need+=(haproxy)
# nginx with lua-nginx-module and lua-cjson: the policy route's "what a user would build".
[ -e /usr/lib/nginx/modules/ngx_http_lua_module.so ] || need+=(libnginx-mod-http-lua)
[ -e /usr/lib/x86_64-linux-gnu/lua/5.1/cjson.so ] || need+=(lua-cjson)
if [ "$smoke" -eq 0 ]; then command -v valgrind >/dev/null || need+=(valgrind); fi
command -v taskset >/dev/null || need+=(util-linux)
command -v python3 >/dev/null || need+=(python3)
if [ "${#need[@]}" -gt 0 ]; then
  echo "== installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
# The Debian package starts a default nginx on port 80; the benchmark runs its own.
if command -v systemctl >/dev/null 2>&1; then systemctl stop nginx haproxy >/dev/null 2>&1 || true; fi
export PATH="$HOME/.cargo/bin:$PATH"
# The fixed-rate runs need oha; the smoke (CI) stands in closed-loop wrk runs for them and so
# compiles no load generator.
if [ "$smoke" -eq 0 ] && ! command -v oha >/dev/null; then
  echo "== installing oha $OHA_VERSION"
  cargo install --quiet --locked oha --version "$OHA_VERSION"
fi

if [ "$(nproc)" -lt 2 ]; then
  echo "the benchmark pins the contender and the load to two different CPUs; this machine has $(nproc)" >&2
  exit 1
fi

if [ "$smoke" -eq 1 ]; then
  cargo build --quiet --bin modegate
  exec python3 bench/bench.py --smoke --bin target/debug/modegate
fi
cargo build --quiet --release --bin modegate
base=()
if [ -n "${MODEGATE_BASE_BIN:-}" ]; then base=(--base-bin "$MODEGATE_BASE_BIN"); fi
exec python3 bench/bench.py --bin target/release/modegate "${base[@]}"
