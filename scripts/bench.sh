#!/usr/bin/env bash
# Benchmarks Starling against Mosquitto on this machine over loopback (throughput, latency, memory
# for 10,000 idle connections), prints the table and writes BENCHMARKS.md. Extra arguments go to
# starling-bench (e.g. --quick for a smoke run that writes nothing; --help for every option).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo build --release -p starling-bench -p starling-broker
mosquitto=$(command -v mosquitto || echo /usr/sbin/mosquitto)
exec target/release/starling-bench --starling target/release/starling-broker --mosquitto "$mosquitto" \
  --invoked-as "./scripts/bench.sh${*:+ $*}" "$@"
