//! Broker-wide counters and gauges (connections, packets, messages by QoS, drops, bytes),
//! updated lock-free on the hot path and read by `$SYS` and the admin API.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        #[derive(Default, Debug)]
        pub struct Metrics { $($(#[$doc])* pub $name: AtomicU64,)* }

        impl Metrics {
            /// Every counter by name, for `$SYS` and the admin API.
            pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
                vec![$((stringify!($name), self.$name.load(Ordering::Relaxed)),)*]
            }
        }
    };
}

counters! {
    /// Connections currently open (after a successful CONNECT).
    connections,
    /// CONNECTs accepted since start.
    client_connected,
    /// CONNECTs refused (auth, quota, bad client id, ...).
    client_connack_refused,
    /// Connections that ended.
    client_disconnected,
    /// Authentication failures.
    client_auth_failure,
    /// Connections closed for keep-alive timeout.
    client_keepalive_timeout,
    /// Connections taken over by a new connection with the same client id.
    session_takenover,
    /// Sessions that expired.
    session_expired,
    messages_received,
    messages_received_qos0,
    messages_received_qos1,
    messages_received_qos2,
    messages_sent,
    messages_sent_qos0,
    messages_sent_qos1,
    messages_sent_qos2,
    /// Messages dropped: queue full, expired, QoS 0 for an offline client, too large for the client.
    messages_dropped,
    /// MQTT 3.1.1 QoS 1/2 PUBLISHes and PUBRELs sent again after `limits.retry_interval_secs`.
    messages_retried,
    /// Published messages that matched no subscription.
    messages_no_subscribers,
    messages_retained_set,
    /// Will messages published.
    messages_will,
    bytes_received,
    bytes_sent,
    packets_received,
    packets_sent,
    /// Malformed or protocol-violating packets.
    packets_invalid,
    /// Messages by origin other than MQTT clients: the admin API's publish, bridges, rules.
    messages_origin_http,
    messages_origin_bridge,
    messages_origin_rule,
    /// Messages peers forwarded to this node's subscribers.
    messages_origin_cluster,
    /// PUBLISHes dropped by a traffic rule's rate or bandwidth limit.
    traffic_throttled,
    /// CONNECTs refused or redirected by a traffic rule (quota, placement).
    traffic_rejected,
}

impl Metrics {
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

/// Highest values seen of the admin API's stats (connections, sessions, topics, subscriptions,
/// shared subscriptions, routes, retained), updated whenever they are sampled.
#[derive(Default, Debug)]
pub struct Peaks([AtomicU64; 7]);

impl Peaks {
    /// Records `now` and returns the peaks including it.
    pub fn sample(&self, now: [u64; 7]) -> [u64; 7] {
        let mut out = [0; 7];
        for (i, v) in now.into_iter().enumerate() {
            out[i] = self.0[i].fetch_max(v, Ordering::Relaxed).max(v);
        }
        out
    }
}
