#!/usr/bin/env bash
# The demo. By default, on the local control plane: installs a real single-node Kubernetes
# (cached after the first run), builds and loads the broker image, deploys three brokers and
# prints how to reach them with kubectl and mosquitto_pub; Ctrl-C tears it all down (root).
# With --local: builds and starts one broker on 127.0.0.1, shows a subscriber receiving a QoS 1
# message with MQTT 5 properties and a retained message, and keeps it running until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
if [ "${1:-}" != "--local" ]; then
  exec cargo run -p e2e -- up
fi
cargo build --release -p starling-broker
data=$(mktemp -d)
./target/release/starling-broker --data-dir "$data" --mqtt-bind 127.0.0.1:1883 --ws-bind 127.0.0.1:8083 &
broker=$!
trap 'kill $broker 2>/dev/null; wait $broker 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 50); do mosquitto_pub -h 127.0.0.1 -p 1883 -t demo/ping -n 2>/dev/null && break; sleep 0.1; done

echo "== a retained message and a QoS 1 message with user properties"
mosquitto_pub -h 127.0.0.1 -p 1883 -t demo/status -m online -r -q 1
mosquitto_sub -h 127.0.0.1 -p 1883 -V mqttv5 -t 'demo/#' -v -C 2 -F '%t %p (retain=%r qos=%q props=%P)' &
sub=$!
sleep 0.5
mosquitto_pub -h 127.0.0.1 -p 1883 -V mqttv5 -t demo/hello -m "hello from starling" -q 1 -D publish user-property source demo
wait $sub
echo "== \$SYS figures"
mosquitto_sub -h 127.0.0.1 -p 1883 -t '$SYS/brokers/+/clients/#' -v -W 2 -C 2 || true
cat <<TXT

The broker runs on mqtt://127.0.0.1:1883 and ws://127.0.0.1:8083/mqtt. Try:
  mosquitto_sub -h 127.0.0.1 -t 'demo/#' -v
  mosquitto_pub -h 127.0.0.1 -t demo/x -m hi
Ctrl-C stops it.
TXT
wait $broker
