//! Bridges against real remotes: Mosquitto (Debian package) and a second Starling broker;
//! both directions, properties, loop prevention, outages, live changes and restarts.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::admin::Api;
use crate::clients::{self, next, nothing_for, settle, v5c};
use crate::harness::{BrokerProc, free_port};

/// A Mosquitto broker on a loopback port, stopped on drop.
struct Mosquitto {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    fn start() -> Mosquitto {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(&conf, format!("listener {port} 127.0.0.1\nallow_anonymous true\n")).unwrap();
        let bin =
            if std::path::Path::new("/usr/sbin/mosquitto").exists() { "/usr/sbin/mosquitto" } else { "mosquitto" };
        let child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto");
        // Owned by the guard at once, so it is killed and reaped even if the wait below fails.
        let m = Mosquitto { child, port, _dir: dir };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return m;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("mosquitto did not listen on {port}");
    }

    fn addr(&self) -> std::net::SocketAddr {
        ([127, 0, 0, 1], self.port).into()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn wait_connected(api: &Api, name: &str) -> Value {
    for _ in 0..100 {
        let (_, s) = api.get(&format!("/api/v1/bridges/{name}/status")).await;
        if s["connected"] == true {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("bridge {name} did not connect: {}", api.get(&format!("/api/v1/bridges/{name}")).await.1);
}

#[tokio::test]
async fn bridge_to_mosquitto_carries_messages_both_ways() {
    let remote = Mosquitto::start();
    let b = BrokerProc::start("");
    let api = Api::new(&b);
    let (s, res) = api
        .put(
            "/api/v1/bridges/to-mosquitto",
            json!({
                "server": format!("mqtt-tcp://127.0.0.1:{}", remote.port),
                "forwards": [{"local_topic": "out/#", "remote_topic": "from-starling/${topic}", "qos": 1}],
                "subscriptions": [{"remote_topic": "to-starling/#", "local_topic": "in/${topic}", "qos": 1}]
            }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{res}");
    wait_connected(&api, "to-mosquitto").await;
    // Out: local publish → Mosquitto subscriber.
    let mut far = clients::v4(remote.addr(), "far-sub", true).await;
    far.client.subscribe("from-starling/#", rumqttc::QoS::AtLeastOnce).await.unwrap();
    let mut near = clients::v5(b.tcp, "near-sub", |_| {}).await;
    near.client.subscribe("in/#", v5c::QoS::AtLeastOnce).await.unwrap();
    settle().await;
    let local_pub = clients::v5(b.tcp, "near-pub", |_| {}).await;
    local_pub.client.publish("out/a", v5c::QoS::AtLeastOnce, false, "to the remote").await.unwrap();
    let m = next(&mut far.rx).await.expect("forwarded to Mosquitto");
    assert_eq!((m.topic.as_str(), &m.payload[..]), ("from-starling/out/a", &b"to the remote"[..]));
    // In: Mosquitto publish → local subscriber.
    let out = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &remote.port.to_string(), "-t", "to-starling/x", "-m", "from afar", "-q", "1"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let m = next(&mut near.rx).await.expect("brought in from Mosquitto");
    assert_eq!((&m.topic[..], &m.payload[..]), (&b"in/to-starling/x"[..], &b"from afar"[..]));
    let (_, st) = api.get("/api/v1/bridges/to-mosquitto/status").await;
    assert_eq!((st["forwarded"].as_u64(), st["received"].as_u64()), (Some(1), Some(1)), "{st}");
}

#[tokio::test]
async fn two_starling_brokers_bridged_both_ways_keep_properties_and_do_not_loop() {
    let a = BrokerProc::start("");
    let b = BrokerProc::start("");
    let (api_a, api_b) = (Api::new(&a), Api::new(&b));
    // The same topics both ways: without loop prevention a message would bounce forever.
    for (api, other) in [(&api_a, &b), (&api_b, &a)] {
        let (s, res) = api
            .put(
                "/api/v1/bridges/peer",
                json!({"server": format!("mqtt-tcp://{}", other.tcp), "proto_ver": 5, "forwards": [{"local_topic": "shared/#"}],
                       "connect_properties": {"receive_maximum": 50, "user_properties": {"via": "bridge"}}}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{res}");
    }
    wait_connected(&api_a, "peer").await;
    wait_connected(&api_b, "peer").await;
    // A's CONNECT properties reached B: its Receive Maximum is B's outbound window for it.
    let (_, nodes) = api_a.get("/api/v1/brokers").await;
    let node = nodes[0]["node"].as_str().unwrap().to_string();
    let (_, client) = api_b.get(&format!("/api/v1/clients/starling-bridge-{node}-peer")).await;
    assert_eq!((client["proto_ver"].as_u64(), client["max_inflight"].as_u64()), (Some(5), Some(50)), "{client}");
    let mut on_b = clients::v5(b.tcp, "on-b", |_| {}).await;
    on_b.client.subscribe("shared/#", v5c::QoS::AtLeastOnce).await.unwrap();
    let mut on_a = clients::v5(a.tcp, "on-a", |_| {}).await;
    on_a.client.subscribe("shared/#", v5c::QoS::AtLeastOnce).await.unwrap();
    settle().await;
    let publisher = clients::v5(a.tcp, "pub-a", |_| {}).await;
    let props = v5c::PublishProperties {
        content_type: Some("text/plain".into()),
        response_topic: Some("reply/to".into()),
        correlation_data: Some("c-1".into()),
        user_properties: vec![("k".into(), "v".into())],
        ..Default::default()
    };
    publisher.client.publish_with_properties("shared/t", v5c::QoS::AtLeastOnce, false, "hello b", props).await.unwrap();
    let m = next(&mut on_b.rx).await.expect("bridged to B");
    assert_eq!(&m.payload[..], b"hello b");
    let p = m.properties.expect("properties");
    assert_eq!(p.content_type.as_deref(), Some("text/plain"));
    assert_eq!(p.response_topic.as_deref(), Some("reply/to"));
    assert_eq!(p.correlation_data.as_deref(), Some(&b"c-1"[..]));
    assert!(p.user_properties.contains(&("k".to_string(), "v".to_string())));
    // A sees its own message once, and nothing comes back from B.
    assert!(next(&mut on_a.rx).await.is_some());
    nothing_for(&mut on_a.rx, Duration::from_millis(800)).await;
    nothing_for(&mut on_b.rx, Duration::from_millis(200)).await;
}

#[tokio::test]
async fn messages_accepted_at_qos1_survive_a_remote_outage() {
    let mut remote = BrokerProc::start("");
    let local = BrokerProc::start("");
    let api = Api::new(&local);
    // A persistent subscriber on the remote, offline during the outage.
    let mut c = crate::raw::connect("far-away");
    c.clean_start = false;
    c.session_expiry_interval_secs = 3600;
    let (mut far, _) = crate::raw::Raw::connect_v5(remote.tcp, c.clone()).await;
    far.subscribe(1, &[("keep/#", rmqtt_codec::types::QoS::AtLeastOnce)]).await;
    drop(far);
    api.put(
        "/api/v1/bridges/durable",
        json!({"server": format!("mqtt-tcp://{}", remote.tcp), "forwards": [{"local_topic": "keep/#", "qos": 1}]}),
    )
    .await;
    wait_connected(&api, "durable").await;
    assert!(remote.terminate());
    let publisher = clients::v5(local.tcp, "local-pub", |_| {}).await;
    for i in 0..50 {
        publisher.client.publish("keep/x", v5c::QoS::AtLeastOnce, false, i.to_string()).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, st) = api.get("/api/v1/bridges/durable/status").await;
    assert_eq!(st["connected"], false, "{st}");
    remote.restart();
    wait_connected(&api, "durable").await;
    let (mut far, ack) = crate::raw::Raw::connect_v5(remote.tcp, c).await;
    assert!(ack.session_present);
    let mut got = std::collections::BTreeSet::new();
    while got.len() < 50 {
        let m = far.recv_publish().await;
        got.insert(String::from_utf8_lossy(&m.payload).parse::<u32>().unwrap());
        far.send(crate::raw::puback(m.packet_id.unwrap().get())).await;
    }
    assert_eq!(got, (0..50).collect());
    assert_eq!(api.get("/api/v1/bridges/durable/status").await.1["dropped"], 0);
}

#[tokio::test]
async fn bridge_changes_take_effect_live_and_bridges_survive_a_restart() {
    let remote = Mosquitto::start();
    let mut b = BrokerProc::start("");
    let api = Api::new(&b);
    let server = format!("mqtt-tcp://127.0.0.1:{}", remote.port);
    api.put("/api/v1/bridges/live", json!({"server": server, "forwards": [{"local_topic": "first/#"}]})).await;
    wait_connected(&api, "live").await;
    let mut far = clients::v4(remote.addr(), "far", true).await;
    far.client.subscribe("#", rumqttc::QoS::AtLeastOnce).await.unwrap();
    settle().await;
    // Replace: now "second/#" is forwarded and "first/#" is not.
    let (s, _) =
        api.put("/api/v1/bridges/live", json!({"server": server, "forwards": [{"local_topic": "second/#"}]})).await;
    assert_eq!(s, StatusCode::OK);
    wait_connected(&api, "live").await;
    let publisher = clients::v5(b.tcp, "p", |_| {}).await;
    publisher.client.publish("first/x", v5c::QoS::AtLeastOnce, false, "old").await.unwrap();
    publisher.client.publish("second/x", v5c::QoS::AtLeastOnce, false, "new").await.unwrap();
    assert_eq!(&next(&mut far.rx).await.expect("new forward").payload[..], b"new");
    nothing_for(&mut far.rx, Duration::from_millis(300)).await;
    // Add a remote subscription without reconnecting.
    let (s, res) = api
        .put(
            "/api/v1/bridges/live/subscriptions",
            json!({"subscriptions": [{"remote_topic": "news/#", "local_topic": "${topic}"}]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{res}");
    let mut near = clients::v5(b.tcp, "near", |_| {}).await;
    near.client.subscribe("news/#", v5c::QoS::AtLeastOnce).await.unwrap();
    settle().await;
    Command::new("mosquitto_pub")
        .args(["-p", &remote.port.to_string(), "-t", "news/1", "-m", "extra", "-q", "1"])
        .output()
        .unwrap();
    assert_eq!(&next(&mut near.rx).await.expect("new remote subscription").payload[..], b"extra");
    // Restart: the bridge is back, with its subscriptions.
    assert!(b.terminate());
    b.restart();
    let api = Api::new(&b);
    wait_connected(&api, "live").await;
    let (_, one) = api.get("/api/v1/bridges/live").await;
    assert_eq!(one["config"]["subscriptions"][0]["remote_topic"], "news/#");
    assert_eq!(api.delete("/api/v1/bridges/live").await.0, StatusCode::NO_CONTENT);
    assert_eq!(api.get("/api/v1/bridges").await.1, json!([]));
}

#[tokio::test]
async fn bad_bridge_configs_are_400_naming_the_field() {
    let b = BrokerProc::start("");
    let api = Api::new(&b);
    let cases = [
        (json!({"server": "http://x"}), "server"),
        (json!({"server": "mqtt-tcp://x", "proto_ver": 3}), "proto_ver"),
        (json!({"server": "mqtt-tcp://x", "forwards": [{"local_topic": "a/#/b"}]}), "forwards[0].local_topic"),
        (json!({"server": "mqtt-tcp://x", "forwards": [{"local_topic": "a", "qos": 7}]}), "forwards[0].qos"),
        (json!({"server": "mqtt-tcp://x", "sever": 1}), "sever"),
        (json!({"server": "tls+mqtt-tcp://x"}), "ca_pem"),
        (json!({"server": "mqtt-tcp://x", "connect_properties": {"receive_maximum": 5}}), "proto_ver 5"),
    ];
    for (body, names) in cases {
        let (s, e) = api.put("/api/v1/bridges/bad", body.clone()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
        assert!(e["message"].as_str().unwrap().contains(names), "{body}: {e}");
    }
    assert_eq!(api.put("/api/v1/bridges/b%20d", json!({"server": "mqtt-tcp://x"})).await.0, StatusCode::BAD_REQUEST);
    assert_eq!(api.get("/api/v1/bridges/none").await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_parallel_bridge_shares_its_queue_and_a_rule_can_send_through_it() {
    let remote = Mosquitto::start();
    let b = BrokerProc::start("");
    let api = Api::new(&b);
    let server = format!("mqtt-tcp://127.0.0.1:{}", remote.port);
    let (s, res) = api
        .put("/api/v1/bridges/wide", json!({"server": server, "parallel": 3, "forwards": [{"local_topic": "wide/#"}]}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{res}");
    wait_connected(&api, "wide").await;
    let (s, res) = api
        .put(
            "/api/v1/rules/to-remote",
            json!({"rawsql": "SELECT payload.n AS n FROM \"ruled/#\"",
                   "actions": [{"name": "bridge", "params": {"bridge": "wide", "topic": "via-rule/${n}", "qos": 1}}]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{res}");
    let mut far = clients::v4(remote.addr(), "far", true).await;
    far.client.subscribe("#", rumqttc::QoS::AtLeastOnce).await.unwrap();
    settle().await;
    let publisher = clients::v5(b.tcp, "p", |_| {}).await;
    for i in 0..30 {
        publisher.client.publish("wide/x", v5c::QoS::AtLeastOnce, false, i.to_string()).await.unwrap();
    }
    publisher.client.publish("ruled/a", v5c::QoS::AtLeastOnce, false, r#"{"n": 7}"#).await.unwrap();
    let mut wide = std::collections::BTreeSet::new();
    let mut via_rule = None;
    while wide.len() < 30 || via_rule.is_none() {
        let m = next(&mut far.rx).await.expect("forwarded");
        if m.topic == "via-rule/7" {
            via_rule = Some(String::from_utf8_lossy(&m.payload).to_string());
        } else {
            wide.insert(String::from_utf8_lossy(&m.payload).parse::<u32>().unwrap());
        }
    }
    assert_eq!(wide, (0..30).collect());
    assert_eq!(via_rule.as_deref(), Some(r#"{"n":7}"#));
    assert_eq!(api.get("/api/v1/rules/to-remote/metrics").await.1["actions"][0]["success"], 1);
}

#[tokio::test]
async fn bridges_reach_remotes_over_tls_and_websocket() {
    let (remote, pki) = crate::listeners::tls_broker(false, "");
    let tls = remote.tls.expect("TLS listener");
    let local = BrokerProc::start("");
    let api = Api::new(&local);
    let ca = std::fs::read_to_string(pki.path().join("ca.crt")).unwrap();
    let (s, res) = api
        .put(
            "/api/v1/bridges/secure",
            json!({"server": format!("tls+mqtt-tcp://localhost:{}", tls.port()), "ca_pem": ca, "proto_ver": 5,
                   "forwards": [{"local_topic": "sec/#"}]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{res}");
    let (s, res) = api
        .put(
            "/api/v1/bridges/web",
            json!({"server": format!("ws://127.0.0.1:{}/mqtt", remote.ws.port()), "forwards": [{"local_topic": "web/#"}]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{res}");
    wait_connected(&api, "secure").await;
    wait_connected(&api, "web").await;
    let mut far = clients::v5(remote.tcp, "far", |_| {}).await;
    far.client.subscribe("#", v5c::QoS::AtLeastOnce).await.unwrap();
    settle().await;
    let p = clients::v5(local.tcp, "p", |_| {}).await;
    p.client.publish("sec/1", v5c::QoS::AtLeastOnce, false, "over tls").await.unwrap();
    p.client.publish("web/1", v5c::QoS::AtLeastOnce, false, "over ws").await.unwrap();
    let mut got = vec![
        String::from_utf8_lossy(&next(&mut far.rx).await.expect("bridged").payload).to_string(),
        String::from_utf8_lossy(&next(&mut far.rx).await.expect("bridged").payload).to_string(),
    ];
    got.sort();
    assert_eq!(got, ["over tls", "over ws"]);
}

#[tokio::test]
async fn replacing_a_bridge_carries_its_queued_messages_to_the_new_connection() {
    let remote = BrokerProc::start("");
    let local = BrokerProc::start("");
    let api = Api::new(&local);
    let mut c = crate::raw::connect("collector");
    c.session_expiry_interval_secs = 3600;
    let (mut far, _) = crate::raw::Raw::connect_v5(remote.tcp, c.clone()).await;
    far.subscribe(1, &[("queued/#", rmqtt_codec::types::QoS::AtLeastOnce)]).await;
    // First pointed at a port where nothing listens: everything queues.
    let nowhere = format!("mqtt-tcp://127.0.0.1:{}", free_port());
    let (s, _) = api
        .put("/api/v1/bridges/movable", json!({"server": nowhere, "forwards": [{"local_topic": "queued/#", "qos": 1}]}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let publisher = clients::v5(local.tcp, "queue-filler", |_| {}).await;
    for i in 0..10 {
        publisher.client.publish("queued/x", v5c::QoS::AtLeastOnce, false, i.to_string()).await.unwrap();
    }
    let mut queued = Value::Null;
    for _ in 0..50 {
        queued = api.get("/api/v1/bridges/movable/status").await.1;
        if queued["queue_len"] == 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(queued["queue_len"], 10, "{queued}");
    // The fix: the right server. The 10 messages go with the replacement, none dropped.
    let (s, _) = api
        .put(
            "/api/v1/bridges/movable",
            json!({"server": format!("mqtt-tcp://{}", remote.tcp), "forwards": [{"local_topic": "queued/#", "qos": 1}]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    wait_connected(&api, "movable").await;
    let mut got = Vec::new();
    while got.len() < 10 {
        let m = far.recv_publish().await;
        got.push(String::from_utf8_lossy(&m.payload).parse::<u32>().unwrap());
        far.send(crate::raw::puback(m.packet_id.unwrap().get())).await;
    }
    assert_eq!(got, (0..10).collect::<Vec<_>>(), "in order");
    assert_eq!(api.get("/api/v1/bridges/movable/status").await.1["dropped"], 0);
}
