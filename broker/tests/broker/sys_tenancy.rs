//! `$SYS/brokers/{node}/...` figures, and tenant isolation of topics, retained messages and sessions.

use std::time::Duration;

use crate::clients::{self, next, nothing_for, settle, v5c};
use crate::harness::BrokerProc;

#[tokio::test]
async fn sys_topics_publish_version_uptime_and_counts() {
    let b = BrokerProc::start("[sys]\ninterval_secs = 1\n");
    let mut s = clients::v5(b.tcp, "sys", |_| {}).await;
    s.client.subscribe("$SYS/brokers/test-node/#", v5c::QoS::AtMostOnce).await.unwrap();
    let wanted =
        ["version", "uptime", "clients/connected", "messages/received", "messages/sent", "subscriptions/count"];
    let mut seen = std::collections::HashMap::new();
    // They come every second (the first retained one may predate this client); collect for at
    // most 10 s, until every wanted topic was seen and a publication counts this client.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let counted = |seen: &std::collections::HashMap<String, String>| {
        seen.get("$SYS/brokers/test-node/clients/connected").and_then(|v| v.parse::<u64>().ok()).is_some_and(|n| n >= 1)
    };
    while !(wanted.iter().all(|t| seen.contains_key(&format!("$SYS/brokers/test-node/{t}"))) && counted(&seen))
        && let Ok(Some(m)) = tokio::time::timeout_at(deadline, s.rx.recv()).await
    {
        let topic = String::from_utf8_lossy(&m.topic).to_string();
        seen.insert(topic, String::from_utf8_lossy(&m.payload).to_string());
    }
    for t in wanted {
        assert!(seen.contains_key(&format!("$SYS/brokers/test-node/{t}")), "missing {t}: {seen:?}");
    }
    assert_eq!(seen["$SYS/brokers/test-node/version"], env!("CARGO_PKG_VERSION"));
    let connected: u64 = seen["$SYS/brokers/test-node/clients/connected"].parse().unwrap();
    assert!(connected >= 1);
}

#[tokio::test]
async fn tenants_never_see_each_others_topics_retained_messages_or_sessions() {
    let b = BrokerProc::start("[tenancy]\nrule = \"username_prefix\"\n");
    let login = |user: &'static str| {
        move |o: &mut v5c::MqttOptions| {
            o.set_credentials(user, "x");
        }
    };
    let mut acme = clients::v5(b.tcp, "same-id", login("acme/alice")).await;
    let mut globex = clients::v5(b.tcp, "same-id", login("globex/bob")).await;
    // The same client id in two tenants is two sessions: no takeover.
    acme.client.subscribe("t/#", v5c::QoS::AtLeastOnce).await.unwrap();
    globex.client.subscribe("t/#", v5c::QoS::AtLeastOnce).await.unwrap();
    settle().await;
    let acme_pub = clients::v5(b.tcp, "acme-pub", login("acme/pub")).await;
    acme_pub.client.publish("t/x", v5c::QoS::AtLeastOnce, true, "acme only").await.unwrap();
    assert_eq!(&next(&mut acme.rx).await.expect("same tenant").payload[..], b"acme only");
    nothing_for(&mut globex.rx, Duration::from_millis(500)).await;
    // Retained messages stay in their tenant too.
    let mut late_globex = clients::v5(b.tcp, "late", login("globex/carol")).await;
    late_globex.client.subscribe("t/#", v5c::QoS::AtLeastOnce).await.unwrap();
    nothing_for(&mut late_globex.rx, Duration::from_millis(500)).await;
    let mut late_acme = clients::v5(b.tcp, "late", login("acme/dave")).await;
    late_acme.client.subscribe("t/#", v5c::QoS::AtLeastOnce).await.unwrap();
    assert!(next(&mut late_acme.rx).await.expect("acme's retained").retain);
    // Both first clients are still connected (no cross-tenant takeover).
    acme_pub.client.publish("t/y", v5c::QoS::AtLeastOnce, false, "again").await.unwrap();
    assert_eq!(&next(&mut acme.rx).await.expect("still connected").payload[..], b"again");
}

/// Reads `$SYS` publications until `done` says so (5 s at most); returns whether it did.
async fn sys_until(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<v5c::Publish>,
    mut done: impl FnMut(&str, u64) -> bool,
) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while let Ok(Some(m)) = tokio::time::timeout_at(deadline, rx.recv()).await {
        let topic = String::from_utf8_lossy(&m.topic).to_string();
        let figure = topic.trim_start_matches("$SYS/brokers/test-node/");
        let value: u64 = String::from_utf8_lossy(&m.payload).parse().expect("numeric $SYS figure");
        if done(figure, value) {
            return true;
        }
    }
    false
}

#[tokio::test]
async fn sys_uptime_increases_and_message_counts_follow_what_clients_published() {
    let b = BrokerProc::start("[sys]\ninterval_secs = 1\n");
    let mut sys = clients::v5(b.tcp, "sys-watch", |_| {}).await;
    for figure in ["uptime", "messages/received", "messages/sent"] {
        sys.client.subscribe(format!("$SYS/brokers/test-node/{figure}"), v5c::QoS::AtMostOnce).await.unwrap();
    }
    // Three uptime publications (a second apart): the third is later than the first by >= 1 s.
    let mut uptimes = Vec::new();
    let (mut received_before, mut sent_before) = (None, 0);
    assert!(
        sys_until(&mut sys.rx, |figure, value| {
            match figure {
                "uptime" => uptimes.push(value),
                "messages/received" => received_before = Some(value),
                "messages/sent" => sent_before = value,
                _ => {}
            }
            uptimes.len() == 3
        })
        .await,
        "three uptime publications within 5 s: {uptimes:?}"
    );
    assert!(uptimes.windows(2).all(|w| w[0] <= w[1]), "uptime never goes back: {uptimes:?}");
    assert!(uptimes[2] > uptimes[0], "uptime increases: {uptimes:?}");
    assert_eq!(received_before, Some(0), "no client has published yet");

    // Seven messages at QoS 0, 1 and 2, each delivered to one subscriber.
    let mut sub = clients::v4(b.tcp, "counted-sub", true).await;
    sub.client.subscribe("counted/t", rumqttc::QoS::ExactlyOnce).await.unwrap();
    settle().await;
    let p = clients::v4(b.tcp, "counted-pub", true).await;
    let qos = [rumqttc::QoS::AtMostOnce, rumqttc::QoS::AtLeastOnce, rumqttc::QoS::ExactlyOnce];
    for i in 0..7 {
        p.client.publish("counted/t", qos[i % 3], false, i.to_string()).await.unwrap();
        assert_eq!(next(&mut sub.rx).await.expect("delivered").payload, i.to_string().as_bytes());
    }
    let (mut received, mut sent_after) = (Vec::new(), None);
    assert!(
        sys_until(&mut sys.rx, |figure, value| {
            match figure {
                "messages/received" => received.push(value),
                "messages/sent" if received.last() == Some(&7) => sent_after = Some(value),
                _ => {}
            }
            sent_after.is_some()
        })
        .await,
        "messages/received reaches 7 within 5 s: {received:?}"
    );
    assert!(received.iter().all(|&n| n <= 7), "only the test's 7 messages were received: {received:?}");
    let sent_after = sent_after.unwrap_or_default();
    assert!(sent_after >= sent_before + 7, "messages/sent counts the 7 deliveries: {sent_before} -> {sent_after}");
}
