//! Subscriptions: wildcards, `$`-topics, shared subscriptions, No Local, Retain As Published,
//! Retain Handling and Subscription Identifiers, and invalid filters.

use std::time::Duration;

use rmqtt_codec::types::QoS;
use rmqtt_codec::v5::{self, SubscribeAckReason};

use crate::clients::{self, next, nothing_for, settle, v5c};
use crate::harness::BrokerProc;
use crate::raw::{self, Raw, connect};

#[tokio::test]
async fn wildcards_match_and_dollar_topics_are_hidden_from_leading_wildcards() {
    let b = BrokerProc::start("[sys]\ninterval_secs = 1\n");
    let mut all = clients::v4(b.tcp, "hash", true).await;
    all.client.subscribe("#", rumqttc::QoS::AtMostOnce).await.unwrap();
    let mut plus = clients::v4(b.tcp, "plus", true).await;
    plus.client.subscribe("a/+/c", rumqttc::QoS::AtMostOnce).await.unwrap();
    settle().await;
    let p = clients::v4(b.tcp, "pub", true).await;
    p.client.publish("a/b/c", rumqttc::QoS::AtMostOnce, false, "1").await.unwrap();
    p.client.publish("a/b/d", rumqttc::QoS::AtMostOnce, false, "2").await.unwrap();
    assert_eq!(next(&mut plus.rx).await.unwrap().topic, "a/b/c");
    nothing_for(&mut plus.rx, Duration::from_millis(300)).await;
    let mut topics = vec![];
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(1500), all.rx.recv()).await {
        topics.push(m.topic);
    }
    assert!(topics.contains(&"a/b/c".to_string()) && topics.contains(&"a/b/d".to_string()));
    assert!(topics.iter().all(|t| !t.starts_with('$')), "'#' must not see $SYS: {topics:?}");
}

#[tokio::test]
async fn shared_subscription_balances_across_members_and_survives_one_leaving() {
    let b = BrokerProc::start("");
    let mut members = Vec::new();
    for i in 0..3 {
        let m = clients::v5(b.tcp, &format!("worker-{i}"), |_| {}).await;
        m.client.subscribe("$share/workers/jobs/+", v5c::QoS::AtLeastOnce).await.unwrap();
        members.push(m);
    }
    settle().await;
    let p = clients::v5(b.tcp, "dispatcher", |_| {}).await;
    for i in 0..30 {
        p.client.publish(format!("jobs/{i}"), v5c::QoS::AtLeastOnce, false, "job").await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let counts: Vec<usize> = members
        .iter_mut()
        .map(|m| {
            let mut n = 0;
            while m.rx.try_recv().is_ok() {
                n += 1;
            }
            n
        })
        .collect();
    assert_eq!(counts.iter().sum::<usize>(), 30, "each job once: {counts:?}");
    assert!(counts.iter().all(|&c| c == 10), "round-robin: {counts:?}");

    let leaving = members.remove(1);
    leaving.client.disconnect().await.unwrap();
    settle().await;
    for i in 0..10 {
        p.client.publish(format!("jobs/{i}"), v5c::QoS::AtLeastOnce, false, "job").await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let mut total = 0;
    for m in members.iter_mut() {
        let mut n = 0;
        while m.rx.try_recv().is_ok() {
            n += 1;
        }
        assert!(n > 0, "remaining members keep getting work");
        total += n;
    }
    assert_eq!(total, 10, "nothing lost after a member left");
}

#[tokio::test]
async fn no_local_suppresses_own_messages() {
    let b = BrokerProc::start("");
    let mut me = clients::v5(b.tcp, "narcissus", |_| {}).await;
    let f = v5c::Filter { nolocal: true, ..v5c::Filter::new("echo/#", v5c::QoS::AtMostOnce) };
    me.client.subscribe_many(vec![f]).await.unwrap();
    settle().await;
    me.client.publish("echo/1", v5c::QoS::AtMostOnce, false, "mine").await.unwrap();
    nothing_for(&mut me.rx, Duration::from_millis(500)).await;
    let other = clients::v5(b.tcp, "other", |_| {}).await;
    other.client.publish("echo/2", v5c::QoS::AtMostOnce, false, "theirs").await.unwrap();
    assert_eq!(&next(&mut me.rx).await.unwrap().payload[..], b"theirs");
}

#[tokio::test]
async fn retain_as_published_keeps_the_retain_flag_on_live_messages() {
    let b = BrokerProc::start("");
    let mut keep = clients::v5(b.tcp, "rap", |_| {}).await;
    keep.client
        .subscribe_many(vec![v5c::Filter { preserve_retain: true, ..v5c::Filter::new("rap/#", v5c::QoS::AtMostOnce) }])
        .await
        .unwrap();
    let mut plain = clients::v5(b.tcp, "no-rap", |_| {}).await;
    plain.client.subscribe("rap/#", v5c::QoS::AtMostOnce).await.unwrap();
    settle().await;
    let p = clients::v5(b.tcp, "rap-pub", |_| {}).await;
    p.client.publish("rap/x", v5c::QoS::AtMostOnce, true, "r").await.unwrap();
    assert!(next(&mut keep.rx).await.unwrap().retain, "Retain As Published keeps the flag");
    assert!(!next(&mut plain.rx).await.unwrap().retain, "live messages lose the flag otherwise");
}

#[tokio::test]
async fn retain_handling_0_1_2_controls_retained_delivery_at_subscribe() {
    let b = BrokerProc::start("");
    let p = clients::v5(b.tcp, "rh-pub", |_| {}).await;
    p.client.publish("rh/t", v5c::QoS::AtLeastOnce, true, "kept").await.unwrap();
    settle().await;
    let mut c = clients::v5(b.tcp, "rh", |_| {}).await;
    let sub = |rule| vec![v5c::Filter { retain_forward_rule: rule, ..v5c::Filter::new("rh/#", v5c::QoS::AtMostOnce) }];
    c.client.subscribe_many(sub(v5c::RetainForwardRule::Never)).await.unwrap();
    nothing_for(&mut c.rx, Duration::from_millis(400)).await;
    c.client.unsubscribe("rh/#").await.unwrap();
    settle().await;
    c.client.subscribe_many(sub(v5c::RetainForwardRule::OnNewSubscribe)).await.unwrap();
    let m = next(&mut c.rx).await.expect("new subscription gets retained");
    assert!(m.retain);
    c.client.subscribe_many(sub(v5c::RetainForwardRule::OnNewSubscribe)).await.unwrap();
    nothing_for(&mut c.rx, Duration::from_millis(400)).await; // existing subscription: not again
    c.client.subscribe_many(sub(v5c::RetainForwardRule::OnEverySubscribe)).await.unwrap();
    assert!(next(&mut c.rx).await.expect("always").retain);
}

#[tokio::test]
async fn subscription_identifiers_come_back_on_matching_messages() {
    let b = BrokerProc::start("");
    let (mut r, _) = Raw::connect_v5(b.tcp, connect("ids")).await;
    let mut s = match raw::subscribe(1, &[("ids/+", QoS::AtMostOnce)]) {
        v5::Packet::Subscribe(s) => s,
        _ => unreachable!(),
    };
    s.id = std::num::NonZeroU32::new(42);
    r.send(v5::Packet::Subscribe(s.clone())).await;
    r.recv().await;
    s.packet_id = raw::pid(2);
    s.id = std::num::NonZeroU32::new(7);
    s.topic_filters = vec![("ids/#".into(), v5::SubscriptionOptions::default())];
    r.send(v5::Packet::Subscribe(s)).await;
    r.recv().await;
    let (mut p, _) = Raw::connect_v5(b.tcp, connect("ids-pub")).await;
    p.send(raw::publish("ids/x", "hi", QoS::AtMostOnce, None)).await;
    let m = r.recv_publish().await;
    let mut ids: Vec<u32> = m.properties.unwrap().subscription_ids.iter().map(|i| i.get()).collect();
    ids.sort();
    assert_eq!(ids, vec![7, 42], "one copy carrying both identifiers");
}

#[tokio::test]
async fn invalid_filters_get_0x8f_and_valid_ones_in_the_same_subscribe_are_granted() {
    let b = BrokerProc::start("");
    let (mut r, _) = Raw::connect_v5(b.tcp, connect("bad-filters")).await;
    let codes = r
        .subscribe(
            1,
            &[
                ("a/#/b", QoS::AtMostOnce),
                ("ok/+", QoS::AtLeastOnce),
                ("x+", QoS::AtMostOnce),
                ("$share/g", QoS::AtMostOnce),
            ],
        )
        .await;
    assert_eq!(
        codes,
        vec![
            SubscribeAckReason::TopicFilterInvalid,
            SubscribeAckReason::GrantedQos1,
            SubscribeAckReason::TopicFilterInvalid,
            SubscribeAckReason::TopicFilterInvalid
        ]
    );
}

#[tokio::test]
async fn subscriptions_per_client_limit_answers_quota_exceeded() {
    let b = BrokerProc::start("[limits]\nmax_subscriptions_per_client = 2\n");
    let (mut r, _) = Raw::connect_v5(b.tcp, connect("greedy")).await;
    let codes = r.subscribe(1, &[("a", QoS::AtMostOnce), ("b", QoS::AtMostOnce), ("c", QoS::AtMostOnce)]).await;
    assert_eq!(codes[2], SubscribeAckReason::QuotaExceeded);
    assert!(b.log().contains("max_subscriptions_per_client reached"));
}
