//! The rule engine: SQL rules over the message stream (NanoMQ/EMQX style) with republish,
//! bridge and webhook actions, evaluated off the publishing connection's path.
//!
//! `Broker::publish` hands a message over only when some enabled rule's FROM matches its topic
//! (with no rules that is one relaxed atomic load); a worker task evaluates the rules and runs
//! the actions. A failed action is counted and logged and never blocks message flow.

pub mod eval;
pub mod sql;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use bytestring::ByteString;
use crds::{ActionMetrics, RuleAction, RuleConfig, RuleMetrics};
use parking_lot::{Mutex, RwLock};
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use crate::broker::Broker;
use crate::message::{Message, MessageProperties, now_ms};
use crate::metrics::Metrics;
use crate::topic::{matches, validate_name};
use sql::Query;

const KIND: &str = "rule";
/// Messages waiting for the rule worker before new ones are dropped (and counted).
const QUEUE: usize = 10_000;
/// The publisher id of messages a rule republishes.
pub const RULE_PUBLISHER_PREFIX: &str = "$rule/";

/// One rule, compiled.
pub struct Rule {
    pub id: String,
    pub config: RuleConfig,
    query: Query,
    tenant: String,
    metrics: Mutex<RuleMetrics>,
}

impl Rule {
    pub fn metrics(&self) -> RuleMetrics {
        self.metrics.lock().clone()
    }
}

/// Every rule of the node, and the queue to the worker.
pub struct RuleEngine {
    rules: RwLock<BTreeMap<String, Arc<Rule>>>,
    /// Enabled rules; publishing checks this first.
    enabled: AtomicUsize,
    /// The `rules` plugin unloaded: no rule runs.
    pub paused: std::sync::atomic::AtomicBool,
    tx: mpsc::Sender<Arc<Message>>,
    rx: Mutex<Option<mpsc::Receiver<Arc<Message>>>>,
    http: reqwest::Client,
}

impl Default for RuleEngine {
    fn default() -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        RuleEngine {
            rules: RwLock::default(),
            enabled: AtomicUsize::new(0),
            paused: Default::default(),
            tx,
            rx: Mutex::new(Some(rx)),
            http: reqwest::Client::builder().connect_timeout(Duration::from_secs(5)).build().unwrap_or_default(),
        }
    }
}

/// What `put` did.
#[derive(Debug, PartialEq, Eq)]
pub enum Put {
    Created,
    Replaced,
    Unchanged,
}

impl RuleEngine {
    /// Hands a published message to the worker if an enabled rule may select it.
    pub fn offer(&self, metrics: &Metrics, msg: &Arc<Message>) {
        if self.enabled.load(Ordering::Relaxed) == 0 || self.paused.load(Ordering::Relaxed) {
            return;
        }
        let wanted =
            self.rules.read().values().any(|r| {
                r.config.enabled && r.tenant == msg.tenant && r.query.from.iter().any(|f| matches(f, &msg.topic))
            });
        if wanted && self.tx.try_send(msg.clone()).is_err() {
            Metrics::inc(&metrics.messages_dropped);
            tracing::warn!("rule engine queue full; a message skipped the rules");
        }
    }

    pub fn get(&self, id: &str) -> Option<Arc<Rule>> {
        self.rules.read().get(id).cloned()
    }

    pub fn list(&self) -> Vec<Arc<Rule>> {
        self.rules.read().values().cloned().collect()
    }

    /// Compiles a rule; the message names the field (and for SQL the position).
    pub fn compile(broker: &Broker, id: &str, config: RuleConfig) -> Result<Rule, String> {
        if id.is_empty() || id.len() > 128 || !id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
            return Err(format!("rule id {id:?} must be 1 to 128 of A-Z a-z 0-9 - _ ."));
        }
        config.validate()?;
        let query = sql::compile(&config.rawsql, broker.limits().max_topic_levels)?;
        let tenant = config.tenant.clone().unwrap_or_else(|| broker.config.tenancy.default_tenant.clone());
        let metrics =
            RuleMetrics { actions: vec![ActionMetrics::default(); config.actions.len()], ..Default::default() };
        Ok(Rule { id: id.to_string(), config, query, tenant, metrics: Mutex::new(metrics) })
    }

    /// Creates or replaces a rule and stores it. Metrics restart when the rule changes.
    pub fn put(&self, broker: &Broker, id: &str, config: RuleConfig) -> Result<Put, String> {
        let old = self.get(id);
        if old.as_ref().is_some_and(|r| r.config == config) {
            return Ok(Put::Unchanged);
        }
        let rule = Self::compile(broker, id, config)?;
        broker.store.put_object(KIND, id, &rule.config);
        self.rules.write().insert(id.to_string(), Arc::new(rule));
        self.recount();
        Ok(if old.is_some() { Put::Replaced } else { Put::Created })
    }

    pub fn delete(&self, broker: &Broker, id: &str) -> bool {
        let existed = self.rules.write().remove(id).is_some();
        if existed {
            broker.store.delete_object(KIND, id);
            self.recount();
        }
        existed
    }

    fn recount(&self) {
        let n = self.rules.read().values().filter(|r| r.config.enabled).count();
        self.enabled.store(n, Ordering::Relaxed);
    }

    /// Loads the stored rules (at node start).
    pub fn restore(&self, broker: &Broker) {
        match broker.store.load_objects::<RuleConfig>(KIND) {
            Ok(all) => {
                for (id, cfg) in all {
                    match Self::compile(broker, &id, cfg) {
                        Ok(rule) => {
                            self.rules.write().insert(id, Arc::new(rule));
                        }
                        Err(e) => tracing::warn!(rule = %id, error = %e, "stored rule no longer valid; not loaded"),
                    }
                }
                self.recount();
            }
            Err(e) => tracing::error!(error = %e, "cannot read rules from the store"),
        }
    }

    /// The worker: evaluates rules for queued messages until the node stops.
    pub async fn run(broker: Arc<Broker>) {
        let Some(mut rx) = broker.rules.rx.lock().take() else { return };
        loop {
            let msg = tokio::select! {
                _ = broker.shutdown.cancelled() => return,
                m = rx.recv() => match m { Some(m) => m, None => return },
            };
            let rules = broker.rules.list();
            for rule in rules.iter().filter(|r| r.config.enabled && r.tenant == msg.tenant) {
                if msg.publisher.as_deref() == Some(&format!("{RULE_PUBLISHER_PREFIX}{}", rule.id)) {
                    continue; // a rule never sees what it published itself
                }
                if rule.query.from.iter().any(|f| matches(f, &msg.topic)) {
                    apply(&broker, rule, &msg);
                }
            }
        }
    }
}

/// The fields a rule can read of a message.
fn context(broker: &Broker, msg: &Message) -> Value {
    let payload = serde_json::from_slice::<Value>(&msg.payload)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&msg.payload).into_owned()));
    let username = msg
        .publisher
        .as_deref()
        .and_then(|c| broker.sessions.get(&msg.tenant, c))
        .and_then(|s| s.lock().username.clone());
    let user_properties: Map<String, Value> =
        msg.properties.user_properties.iter().map(|(k, v)| (k.to_string(), Value::String(v.to_string()))).collect();
    json!({
        "topic": &*msg.topic,
        "payload": payload,
        "qos": u8::from(msg.qos),
        "retain": msg.retain,
        "clientid": msg.publisher.as_deref(),
        "username": username,
        "tenant": msg.tenant,
        "timestamp": msg.received_ms,
        "user_properties": user_properties,
    })
}

/// Evaluates one rule for one message and runs its actions.
fn apply(broker: &Arc<Broker>, rule: &Arc<Rule>, msg: &Arc<Message>) {
    rule.metrics.lock().matched += 1;
    let ctx = context(broker, msg);
    let selected = match select(&rule.query, &ctx) {
        Ok(Some(v)) => v,
        Ok(None) => return,
        Err(e) => {
            rule.metrics.lock().failed += 1;
            tracing::debug!(rule = %rule.id, error = %e, "rule evaluation failed");
            return;
        }
    };
    rule.metrics.lock().passed += 1;
    for (i, action) in rule.config.actions.iter().enumerate() {
        let done = match action {
            RuleAction::Republish { topic, qos, retain, payload } => {
                republish(broker, rule, msg, &selected, topic, *qos, *retain, payload.as_deref())
            }
            RuleAction::Bridge { bridge, topic, qos } => {
                let remote = topic.as_deref().map(|t| template(t, &selected)).unwrap_or_else(|| msg.topic.to_string());
                match broker.bridges.get(bridge) {
                    Some(link) => {
                        let m = derived(msg, rule, &remote, Bytes::from(selected.to_string()), *qos, false);
                        link.send(remote, m);
                        Ok(())
                    }
                    None => Err(format!("bridge {bridge:?} not found")),
                }
            }
            RuleAction::Webhook { url, headers, timeout_ms, retries } => {
                webhook(broker, rule.clone(), i, url.clone(), headers.clone(), *timeout_ms, *retries, selected.clone());
                continue; // counted when it finishes
            }
        };
        count(rule, i, done);
    }
}

fn count(rule: &Rule, action: usize, done: Result<(), String>) {
    let mut m = rule.metrics.lock();
    if let Some(a) = m.actions.get_mut(action) {
        match &done {
            Ok(()) => a.success += 1,
            Err(_) => a.failure += 1,
        }
    }
    if let Err(e) = done {
        tracing::warn!(rule = %rule.id, action, error = %e, "rule action failed");
    }
}

/// The selected fields, or `None` when the WHERE rejects the message.
fn select(q: &Query, ctx: &Value) -> Result<Option<Value>, String> {
    if let Some(cond) = &q.condition
        && !eval::truthy(&eval::eval(cond, ctx)?)
    {
        return Ok(None);
    }
    let mut out = Map::new();
    for (name, expr) in &q.fields {
        match expr {
            None => {
                if let Value::Object(all) = ctx {
                    out.extend(all.clone());
                }
            }
            Some(e) => {
                out.insert(name.clone(), eval::eval(e, ctx)?);
            }
        }
    }
    Ok(Some(Value::Object(out)))
}

/// Replaces `${field}` (or `${a.b}`) with selected values.
fn template(t: &str, selected: &Value) -> String {
    let mut out = String::with_capacity(t.len());
    let mut rest = t;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return out;
        };
        let path: Vec<&str> = after[..end].split('.').collect();
        match eval::lookup(selected, &path) {
            Some(Value::String(s)) => out.push_str(s),
            Some(Value::Null) | None => {}
            Some(v) => out.push_str(&v.to_string()),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

fn derived(msg: &Message, rule: &Rule, topic: &str, payload: Bytes, qos: u8, retain: bool) -> Message {
    Message {
        tenant: msg.tenant.clone(),
        topic: ByteString::from(topic),
        payload,
        qos: crate::admin::publish::parse_qos(qos, "qos").unwrap_or(rmqtt_codec::types::QoS::AtMostOnce),
        retain,
        properties: MessageProperties::default(),
        publisher: Some(ByteString::from(format!("{RULE_PUBLISHER_PREFIX}{}", rule.id))),
        received_ms: now_ms(),
    }
}

#[allow(clippy::too_many_arguments)]
fn republish(
    broker: &Broker,
    rule: &Rule,
    msg: &Message,
    selected: &Value,
    topic: &str,
    qos: u8,
    retain: bool,
    payload: Option<&str>,
) -> Result<(), String> {
    let topic = template(topic, selected);
    validate_name(&topic, broker.limits().max_topic_levels).map_err(|e| format!("republish topic {topic:?}: {e}"))?;
    let body = match payload {
        Some(t) => Bytes::from(template(t, selected)),
        None => Bytes::from(selected.to_string()),
    };
    Metrics::inc(&broker.metrics.messages_origin_rule);
    broker.publish(derived(msg, rule, &topic, body, qos, retain));
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn webhook(
    broker: &Arc<Broker>,
    rule: Arc<Rule>,
    action: usize,
    url: String,
    headers: BTreeMap<String, String>,
    timeout_ms: u64,
    retries: u32,
    body: Value,
) {
    let http = broker.rules.http.clone();
    tokio::spawn(async move {
        let mut last = String::new();
        for attempt in 0..=retries {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 * 2u64.pow(attempt.min(6)))).await;
            }
            let mut req = http.post(&url).timeout(Duration::from_millis(timeout_ms.max(1))).json(&body);
            for (k, v) in &headers {
                req = req.header(k, v);
            }
            match req.send().await {
                Ok(r) if r.status().is_success() => {
                    count(&rule, action, Ok(()));
                    return;
                }
                Ok(r) => last = format!("{url}: HTTP {}", r.status()),
                Err(e) => last = format!("{url}: {e}"),
            }
        }
        count(&rule, action, Err(last));
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_fill_in_selected_fields() {
        let v = json!({"clientid": "c1", "t": 31.5, "room": {"name": "lab"}});
        assert_eq!(template("alerts/${clientid}/${room.name}", &v), "alerts/c1/lab");
        assert_eq!(template("t=${t} missing=${nope}", &v), "t=31.5 missing=");
    }

    #[test]
    fn select_applies_where_and_aliases() {
        let q = sql::compile(r#"SELECT payload.temp AS t, clientid FROM "s/#" WHERE payload.temp > 30"#, 64).unwrap();
        let hot = json!({"payload": {"temp": 35}, "clientid": "c"});
        assert_eq!(select(&q, &hot).unwrap(), Some(json!({"t": 35, "clientid": "c"})));
        let cold = json!({"payload": {"temp": 10}, "clientid": "c"});
        assert_eq!(select(&q, &cold).unwrap(), None);
    }
}
