//! Interoperability with other real clients: the mosquitto_pub/mosquitto_sub command-line
//! clients (3.1.1 and 5.0) and the paho-mqtt Python client.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::harness::BrokerProc;

fn port(b: &BrokerProc) -> String {
    b.tcp.port().to_string()
}

#[test]
fn mosquitto_clients_exchange_messages_with_v311_and_v5() {
    let b = BrokerProc::start("");
    for version in ["mqttv311", "mqttv5"] {
        let topic = format!("interop/{version}");
        let sub = Command::new("mosquitto_sub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port(&b),
                "-V",
                version,
                "-t",
                &topic,
                "-q",
                "2",
                "-C",
                "2",
                "-W",
                "10",
                "-v",
            ])
            .stdout(Stdio::piped())
            .spawn()
            .expect("mosquitto_sub");
        std::thread::sleep(Duration::from_millis(500));
        for (qos, msg) in [("1", "one"), ("2", "two")] {
            let out = Command::new("mosquitto_pub")
                .args(["-h", "127.0.0.1", "-p", &port(&b), "-V", version, "-t", &topic, "-m", msg, "-q", qos])
                .output()
                .expect("mosquitto_pub");
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        }
        let out = sub.wait_with_output().unwrap();
        assert!(out.status.success(), "mosquitto_sub timed out");
        assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{topic} one\n{topic} two\n"));
    }
    // Retained message read back with mosquitto_sub, flags shown by its format string.
    let out = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port(&b), "-t", "interop/ret", "-m", "r", "-r", "-q", "1"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let out = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port(&b), "-t", "interop/ret", "-C", "1", "-W", "5", "-F", "%r %t %p"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1 interop/ret r\n");
}

const PAHO: &str = r#"
import sys, time, threading
import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes

port = int(sys.argv[1])
results = {}
done = threading.Event()

def on_message(client, userdata, msg):
    up = dict(msg.properties.UserProperty) if msg.properties and hasattr(msg.properties, "UserProperty") else {}
    results[msg.topic] = (msg.payload.decode(), msg.qos, up.get("k"))
    if len(results) % 2 == 0:
        done.set()

for proto, name in [(mqtt.MQTTv311, "v311"), (mqtt.MQTTv5, "v5")]:
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="paho-sub-" + name, protocol=proto)
    sub.on_message = on_message
    sub.connect("127.0.0.1", port)
    sub.loop_start()
    sub.subscribe("paho/" + name + "/#", qos=2)
    time.sleep(0.5)
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="paho-pub-" + name, protocol=proto)
    pub.connect("127.0.0.1", port)
    pub.loop_start()
    props = None
    if proto == mqtt.MQTTv5:
        props = Properties(PacketTypes.PUBLISH)
        props.UserProperty = ("k", "v")
    pub.publish("paho/" + name + "/a", "qos1", qos=1, properties=props).wait_for_publish(5)
    pub.publish("paho/" + name + "/b", "qos2", qos=2, properties=props).wait_for_publish(5)
    if not done.wait(5):
        print("timeout", results); sys.exit(1)
    done.clear()
    pub.loop_stop(); pub.disconnect(); sub.loop_stop(); sub.disconnect()

for k in sorted(results):
    print(k, *results[k])
"#;

#[test]
fn paho_python_client_exchanges_messages_with_v311_and_v5() {
    let b = BrokerProc::start("");
    let out = Command::new("python3").arg("-c").arg(PAHO).arg(port(&b)).output().expect("python3 with paho-mqtt");
    assert!(
        out.status.success(),
        "paho script failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout, "paho/v311/a qos1 1 None\npaho/v311/b qos2 2 None\npaho/v5/a qos1 1 v\npaho/v5/b qos2 2 v\n",
        "paho results"
    );
}
