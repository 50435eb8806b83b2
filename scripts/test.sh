#!/usr/bin/env bash
# Sets up a fresh machine and runs every test: formatting, lints, unit and integration tests
# (the integration tests start real broker processes and use real MQTT clients), then the
# end-to-end suite on a real single-node Kubernetes (e2e/; needs root, as on CI).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
charts/test.sh
cargo build --workspace --bins
cargo test --workspace --exclude e2e -- --test-threads 4

# End-to-end: install the local cluster's binaries (idempotent: under a second when cached,
# ~20 min cold on 2 cores), build the release binaries the broker and operator images are
# packed from, and run the suite; it brings the cluster up once, runs its cases in order
# (the chart installs the operator in-cluster) and always tears down.
e2e/cluster/install.sh
cargo build --release -p starling-broker -p starling-operator
STARLING_E2E_SKIP_INSTALL=1 cargo test -p e2e
