#!/usr/bin/env bash
# Sets up a fresh machine and runs every test: formatting, lints, unit and integration tests
# (the integration tests start real broker processes and use real MQTT clients).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo build --workspace --bins
cargo test --workspace -- --test-threads 4
