#!/usr/bin/env bash
# Installs what the tests, the demo and the benchmark need on a fresh Debian machine:
# the Rust toolchain's components, Mosquitto and its clients, curl (the README's API examples are
# run by a test), and the paho-mqtt Python client.
set -euo pipefail

need_root() {
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null; then echo sudo; else
      echo "setup: installing system packages needs root (or sudo)" >&2; exit 1
    fi
  fi
}

if ! command -v cargo >/dev/null; then
  echo "setup: cargo is not on PATH; install Rust (https://rustup.rs) first" >&2
  exit 1
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true

missing=()
command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
command -v mosquitto_pub >/dev/null || missing+=(mosquitto-clients)
command -v python3 >/dev/null || missing+=(python3)
command -v curl >/dev/null || missing+=(curl)
python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=$(need_root)
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! python3 -c 'import paho.mqtt' 2>/dev/null; then
  echo "setup: installing paho-mqtt"
  python3 -m pip install -q paho-mqtt 2>/dev/null || python3 -m pip install -q --break-system-packages paho-mqtt
fi
echo "setup: ok"
