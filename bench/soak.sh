#!/usr/bin/env bash
# Soak: bash bench/soak.sh [--minutes N]   (default 10; writes bench/soak.md + soak.json)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --release --bin modegate
exec python3 bench/soak.py --bin target/release/modegate "$@"
