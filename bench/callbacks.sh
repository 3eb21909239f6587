#!/usr/bin/env bash
# Callbacks per second through the callback listener's own work (verify, nonce, fill pseudo
# ids, re-sign) on one core; writes bench/callbacks.md. About a minute, most of it the build.
#
#   bash bench/callbacks.sh [seconds per case, default 5]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-5}"
cargo build --release --quiet --example callback_throughput
bin=target/release/examples/callback_throughput
pin=()
if command -v taskset >/dev/null && [ "$(nproc)" -gt 1 ]; then pin=(taskset -c 1); fi
rows="$("${pin[@]}" "$bin" "$seconds")"
{
  echo "# Callback throughput (bench/callbacks.sh)"
  echo
  echo "- Machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores, $(uname -sr)"
  echo "- Method: one thread${pin:+ pinned to CPU 1}, release build; ${seconds} s of work per case over signed DISPATCH MO"
  echo "  callbacks (613 bytes) with distinct nonces, signed before the clock starts. Each: HMAC-SHA256"
  echo "  check over the raw bytes, timestamp window, nonce reserved and confirmed in the in-process"
  echo "  cache (no Redis), both empty ids filled with AES-SIV pseudo ids (JSON parsed and written"
  echo "  again), new signature over the bytes forwarded. HTTP is not included."
  echo "- rustc: $(rustc --version)"
  echo
  echo "| work per callback | callbacks | callbacks / s | µs / callback |"
  echo "| --- | ---: | ---: | ---: |"
  echo "$rows"
} > bench/callbacks.md
cat bench/callbacks.md
