#!/usr/bin/env bash
# Memory per stalled reader (see bench/stalled.py); writes bench/stalled.md and .json.
#   bash bench/stalled.sh            full run (200 HTTP/1.1 readers; 50 and 200 h2 streams on one connection; about a minute)
#   bash bench/stalled.sh --smoke    a handful of readers into bench/work/stalled/ (CI)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--smoke" ]; then
  cargo build --quiet --bin modegate
  exec python3 bench/stalled.py --bin target/debug/modegate --count 8 --out bench/work/stalled
fi
cargo build --quiet --release --bin modegate
exec python3 bench/stalled.py --bin target/release/modegate
