//! The one reconcile behind the Bridge, Rule and TrafficRule controllers: put the object into
//! every Ready broker of the referenced BrokerCluster (only where it differs), report per node.
//!
//! Each kind supplies its small parts through [`ManagedKind`] (`bridge.rs`, `rule.rs`,
//! `traffic_rule.rs`); the decisions are pure functions in `managed_diff.rs`.

use std::collections::HashMap;
use std::fmt::Debug;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crds::broker_cluster::BrokerCluster;
use crds::managed::{CONDITION_READY, DeletionPolicy, ManagedStatus, PasswordSecretRef};
use futures::StreamExt;
use futures::future::{BoxFuture, join_all};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{EventType, Recorder};
use kube::runtime::finalizer::{self, finalizer};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{Controller, Predicate, WatchStreamExt, controller, predicates, reflector, watcher};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{debug, info, warn};

use super::diff::{backoff_delay, observe_pod};
use super::managed_diff::{self, ClusterState, NodeOutcome, NodeReport, Observation, Problem};
use super::{FailureCounts, now, publish};
use crate::admin_client::{AdminClient, AdminError, Retry};
use crate::metrics::{ControllerLabels, Metrics};
use crate::resources::admin_secret::{AdminCredentials, read_admin_secret};
use crate::resources::{APP_NAME, LABEL_INSTANCE, LABEL_MANAGED_BY, LABEL_NAME, MANAGER, Names, PAUSE_ANNOTATION};
use crate::resources::{digest, selector_string};
use crate::{Error, Result};

/// The finalizer that removes the object from the brokers before the resource goes.
pub const FINALIZER: &str = "starling.dev/broker-cleanup";

/// How often an object is looked at again when all is well (a broker whose copy was changed
/// or deleted by hand gets it back then).
pub const RESYNC: Duration = Duration::from_secs(60);
/// How soon an object whose cluster is missing or scaled to zero is looked at again (the
/// cluster's and its pods' watches bring it back sooner when something happens).
pub const IDLE_CHECK: Duration = Duration::from_secs(300);
/// How soon an object waiting for a Secret or for Ready brokers is looked at again.
pub const WAIT_CHECK: Duration = Duration::from_secs(60);

/// What differs between the kinds: their spec's shape and the broker calls for them.
pub trait ManagedKind:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + Debug
    + Serialize
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
    /// The controller's name in metrics and logs (`bridge`, `rule`, `trafficrule`).
    const CONTROLLER: &'static str;
    /// What is written to a broker.
    type Config: Clone + Debug + PartialEq + Send + Sync + 'static;

    fn cluster_ref(&self) -> &str;
    fn deletion_policy(&self) -> DeletionPolicy;
    fn managed_status(&self) -> Option<&ManagedStatus>;
    /// A Secret key whose value goes into the config (a Bridge's password).
    fn secret_ref(&self) -> Option<&PasswordSecretRef> {
        None
    }
    /// The config to write, with the Secret's value when [`Self::secret_ref`] names one.
    fn desired(&self, secret: Option<&str>) -> Self::Config;
    /// Whether a broker's copy must be rewritten (the broker may mask some fields).
    fn differs(observed: &Self::Config, desired: &Self::Config) -> bool {
        observed != desired
    }
    /// `GET`: the broker's copy, `None` when it has none.
    fn get<'a>(client: &'a AdminClient, name: &'a str) -> BoxFuture<'a, Result<Option<Self::Config>, AdminError>>;
    /// `PUT`: create or replace.
    fn put<'a>(
        client: &'a AdminClient,
        name: &'a str,
        config: &'a Self::Config,
    ) -> BoxFuture<'a, Result<(), AdminError>>;
    /// `DELETE` (absent is fine).
    fn delete<'a>(client: &'a AdminClient, name: &'a str) -> BoxFuture<'a, Result<(), AdminError>>;
}

/// What the managed-object reconciles share.
pub struct ManagedContext {
    pub client: kube::Client,
    /// One connection pool for every broker's management API.
    pub http: reqwest::Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub admin_retry: Retry,
    /// Consecutive failures per object (`kind/namespace/name`), for [`error_policy`].
    failures: FailureCounts,
}

impl ManagedContext {
    pub fn new(client: kube::Client, http: reqwest::Client, recorder: Recorder, metrics: Arc<Metrics>) -> Self {
        ManagedContext {
            client,
            http,
            recorder,
            metrics,
            admin_retry: Retry::default(),
            failures: FailureCounts::default(),
        }
    }
}

fn key<K: ManagedKind>(obj: &K) -> String {
    format!("{}/{}/{}", K::CONTROLLER, obj.namespace().unwrap_or_default(), obj.name_any())
}

/// After a failed reconcile (a broker refused the object or could not be reached): try again
/// after a per-object exponential back-off (5 s doubling to 5 min), reset by a success.
pub fn error_policy<K: ManagedKind>(obj: Arc<K>, error: &Error, ctx: Arc<ManagedContext>) -> Action {
    let failures = ctx.failures.failed(key(&*obj));
    let delay = backoff_delay(failures);
    warn!(object = %key(&*obj), %error, failures, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// Brings one object's copies in the brokers to what its spec says (or removes them when it
/// is being deleted).
pub async fn reconcile<K: ManagedKind>(obj: Arc<K>, ctx: Arc<ManagedContext>) -> Result<Action> {
    let started = Instant::now();
    let result = reconcile_inner(obj.clone(), &ctx).await;
    ctx.metrics.reconciled(K::CONTROLLER, started.elapsed(), result.as_ref().err().map(Error::kind));
    if result.is_ok() {
        ctx.failures.succeeded(&key(&*obj));
    }
    result
}

async fn reconcile_inner<K: ManagedKind>(obj: Arc<K>, ctx: &ManagedContext) -> Result<Action> {
    let ns = obj.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
    let paused = obj.annotations().get(PAUSE_ANNOTATION).is_some_and(|v| v == "true");
    if paused && obj.meta().deletion_timestamp.is_none() {
        info!(object = %key(&*obj), "reconciliation paused by annotation {PAUSE_ANNOTATION}; no writes");
        return Ok(Action::await_change());
    }
    let api = Api::<K>::namespaced(ctx.client.clone(), &ns);
    finalizer(&api, FINALIZER, obj, |event| async {
        match event {
            finalizer::Event::Apply(obj) => apply(&*obj, ctx, &ns).await,
            finalizer::Event::Cleanup(obj) => cleanup(&*obj, ctx, &ns, paused).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

/// The cluster, its admin login and its pods (sorted by name), or why they cannot be used.
struct Brokers {
    cluster: BrokerCluster,
    creds: AdminCredentials,
    pods: Vec<Pod>,
}

async fn brokers(ctx: &ManagedContext, ns: &str, cluster_name: &str) -> Result<Result<Brokers, Problem>> {
    let cluster = match Api::<BrokerCluster>::namespaced(ctx.client.clone(), ns).get_opt(cluster_name).await? {
        Some(c) if c.metadata.deletion_timestamp.is_none() => c,
        Some(_) => {
            let message = format!("BrokerCluster {cluster_name} is being deleted");
            return Ok(Err(Problem { reason: "ClusterDeleting", message }));
        }
        None => {
            let message = format!("BrokerCluster {cluster_name} not found in namespace {ns}");
            return Ok(Err(Problem { reason: "ClusterNotFound", message }));
        }
    };
    let secret_name = Names::admin_secret(&cluster);
    let creds = match Api::<Secret>::namespaced(ctx.client.clone(), ns).get_opt(&secret_name).await? {
        Some(secret) => match read_admin_secret(&secret) {
            Ok((creds, _)) => creds,
            Err(e) => return Ok(Err(Problem { reason: "AdminSecretInvalid", message: e.to_string() })),
        },
        None => {
            let message =
                format!("the admin Secret {secret_name} of BrokerCluster {cluster_name} does not exist (yet)");
            return Ok(Err(Problem { reason: "AdminSecretMissing", message }));
        }
    };
    let list = ListParams::default().labels(&selector_string(&cluster));
    let mut pods = Api::<Pod>::namespaced(ctx.client.clone(), ns).list(&list).await?.items;
    pods.sort_by_key(|p| p.name_any());
    Ok(Ok(Brokers { cluster, creds, pods }))
}

fn admin_client(ctx: &ManagedContext, cluster: &BrokerCluster, ip: &str, creds: &AdminCredentials) -> AdminClient {
    let host = if ip.contains(':') { format!("[{ip}]") } else { ip.to_string() };
    AdminClient::new(ctx.http.clone(), format!("http://{host}:{}", cluster.spec.admin.port), creds.clone())
        .with_retry(ctx.admin_retry)
        .with_metrics(ctx.metrics.clone())
}

/// The Ready pods' IPs.
fn ready_ips(pods: &[Pod]) -> Vec<(String, Option<String>)> {
    pods.iter()
        .map(|p| {
            let r = observe_pod(p);
            (r.pod, r.ip.filter(|_| r.pod_ready))
        })
        .collect()
}

async fn apply<K: ManagedKind>(obj: &K, ctx: &ManagedContext, ns: &str) -> Result<Action> {
    let name = obj.name_any();
    debug!(object = %key(obj), generation = ?obj.meta().generation, "reconciling");
    let (observation, secret_hash, requeue) = match visit(obj, ctx, ns).await? {
        Ok((nodes, total, hash)) => (Observation::Nodes { nodes, total }, hash, RESYNC),
        Err((problem, requeue)) => (Observation::Stopped(problem), None, requeue),
    };
    let status =
        managed_diff::status(obj.managed_status(), obj.meta().generation, &observation, secret_hash.as_deref(), &now());
    let old = obj.managed_status();
    let old_ready = managed_diff::condition(old, CONDITION_READY).map(|c| (c.status.clone(), c.reason.clone()));
    let ready = managed_diff::condition(Some(&status), CONDITION_READY).cloned();
    write_status(obj, ctx, ns, &status).await?;

    match observation {
        Observation::Stopped(p) => {
            if old_ready != ready.as_ref().map(|c| (c.status.clone(), c.reason.clone())) {
                publish(&ctx.recorder, obj, EventType::Warning, p.reason, "Reconcile", p.message.clone()).await;
            }
            info!(object = %key(obj), reason = p.reason, message = %p.message, retry_in = ?requeue, "waiting");
            Ok(Action::requeue(requeue))
        }
        Observation::Nodes { nodes, .. } => {
            let written: Vec<&str> =
                nodes.iter().filter(|n| n.outcome == NodeOutcome::Written).map(|n| n.pod.as_str()).collect();
            if !written.is_empty() {
                let note = format!("Wrote {name} to {}", written.join(", "));
                publish(&ctx.recorder, obj, EventType::Normal, "Applied", "Apply", note).await;
            }
            if let Some(c) = ready.filter(|c| c.reason == "Rejected" || c.reason == "BrokerAPIFailed") {
                publish(&ctx.recorder, obj, EventType::Warning, &c.reason, "Apply", c.message.clone()).await;
                // Back off (error_policy) instead of retrying at once.
                return Err(Error::Brokers(c.message));
            }
            if old_ready != ready_pair(&status) && ready_pair(&status).is_some_and(|(s, _)| s == "True") {
                let note = format!("In force on all {} brokers", status.nodes_total);
                publish(&ctx.recorder, obj, EventType::Normal, "Ready", "Apply", note).await;
            }
            info!(object = %key(obj), applied = status.nodes_applied, total = status.nodes_total, writes = written.len(), "reconciled");
            Ok(Action::requeue(requeue))
        }
    }
}

fn ready_pair(s: &ManagedStatus) -> Option<(String, String)> {
    managed_diff::condition(Some(s), CONDITION_READY).map(|c| (c.status.clone(), c.reason.clone()))
}

type Visit = Result<(Vec<NodeReport>, i32, Option<String>), (Problem, Duration)>;

/// Visits every Ready broker: GET, and PUT when it differs (or the Secret changed).
async fn visit<K: ManagedKind>(obj: &K, ctx: &ManagedContext, ns: &str) -> Result<Visit> {
    let name = obj.name_any();
    let b = match brokers(ctx, ns, obj.cluster_ref()).await? {
        Ok(b) => b,
        Err(p) => {
            let requeue = if p.reason.starts_with("Cluster") { IDLE_CHECK } else { WAIT_CHECK };
            return Ok(Err((p, requeue)));
        }
    };
    let secret = match obj.secret_ref() {
        None => None,
        Some(r) => match read_secret_key(ctx, ns, r).await? {
            Ok(v) => Some(v),
            Err(p) => return Ok(Err((p, WAIT_CHECK))),
        },
    };
    let total = b.cluster.spec.replicas;
    if total == 0 {
        let message = format!("BrokerCluster {} is scaled to zero", obj.cluster_ref());
        return Ok(Err((Problem { reason: "ClusterScaledToZero", message }, IDLE_CHECK)));
    }
    let targets = ready_ips(&b.pods);
    if targets.iter().all(|(_, ip)| ip.is_none()) {
        let message = format!("none of the brokers of BrokerCluster {} is Ready", obj.cluster_ref());
        return Ok(Err((Problem { reason: "NoReadyBrokers", message }, WAIT_CHECK)));
    }
    let secret_hash = secret.as_deref().map(|s| digest(&[s]));
    let force = managed_diff::secret_changed(obj.managed_status(), secret_hash.as_deref());
    let desired = obj.desired(secret.as_deref());
    let nodes = join_all(targets.into_iter().map(|(pod, ip)| {
        let desired = &desired;
        let (b, name) = (&b, &name);
        async move {
            let Some(ip) = ip else { return NodeReport { pod, outcome: NodeOutcome::NotReady } };
            let client = admin_client(ctx, &b.cluster, &ip, &b.creds);
            let outcome = sync_node::<K>(&client, name, desired, force, ctx).await;
            if let NodeOutcome::Failed(e) | NodeOutcome::Rejected(e) = &outcome {
                warn!(kind = K::CONTROLLER, object = %name, %pod, error = %e, "broker did not take the object");
            }
            NodeReport { pod, outcome }
        }
    }))
    .await;
    Ok(Ok((nodes, total, secret_hash)))
}

/// One broker: read, compare, write when needed.
async fn sync_node<K: ManagedKind>(
    client: &AdminClient,
    name: &str,
    desired: &K::Config,
    force: bool,
    ctx: &ManagedContext,
) -> NodeOutcome {
    let observed = match K::get(client, name).await {
        Ok(o) => o,
        Err(e) => return NodeOutcome::Failed(e.to_string()),
    };
    let write = match &observed {
        None => true,
        Some(o) => force || K::differs(o, desired),
    };
    if !write {
        return NodeOutcome::InSync;
    }
    match K::put(client, name, desired).await {
        Ok(()) => {
            ctx.metrics.broker_write(K::CONTROLLER, "put");
            NodeOutcome::Written
        }
        Err(AdminError::Status { status, message, .. })
            if (400..500).contains(&status) && status != 401 && status != 403 =>
        {
            NodeOutcome::Rejected(message)
        }
        Err(e) => NodeOutcome::Failed(e.to_string()),
    }
}

async fn read_secret_key(ctx: &ManagedContext, ns: &str, r: &PasswordSecretRef) -> Result<Result<String, Problem>> {
    let Some(secret) = Api::<Secret>::namespaced(ctx.client.clone(), ns).get_opt(&r.name).await? else {
        return Ok(Err(Problem { reason: "SecretMissing", message: format!("Secret {} not found", r.name) }));
    };
    let value = secret
        .data
        .as_ref()
        .and_then(|d| d.get(&r.key))
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        .or_else(|| secret.string_data.as_ref().and_then(|d| d.get(&r.key)).cloned());
    Ok(value.ok_or_else(|| Problem {
        reason: "SecretMissing",
        message: format!("Secret {} has no key {:?}", r.name, r.key),
    }))
}

/// The finalizer's work: delete the object from every Ready broker, unless the decision in
/// [`managed_diff::cleanup`] is to let go.
async fn cleanup<K: ManagedKind>(obj: &K, ctx: &ManagedContext, ns: &str, paused: bool) -> Result<Action> {
    let name = obj.name_any();
    let clusters = Api::<BrokerCluster>::namespaced(ctx.client.clone(), ns);
    let cluster_state = match clusters.get_opt(obj.cluster_ref()).await? {
        Some(c) if c.metadata.deletion_timestamp.is_some() => ClusterState::Deleting,
        Some(_) => ClusterState::Present,
        None => ClusterState::Missing,
    };
    let namespace_terminating = match Api::<Namespace>::all(ctx.client.clone()).get_opt(ns).await {
        Ok(n) => n.is_none_or(|n| n.metadata.deletion_timestamp.is_some()),
        // Without permission to read namespaces, judge by the cluster alone.
        Err(e) => {
            debug!(error = %e, "cannot read the namespace");
            false
        }
    };
    match managed_diff::cleanup(obj.deletion_policy(), paused, cluster_state, namespace_terminating) {
        managed_diff::Cleanup::Skip(why) => {
            info!(object = %key(obj), why, "letting go without touching the brokers");
            publish(&ctx.recorder, obj, EventType::Normal, "CleanupSkipped", "Delete", format!("{name}: {why}")).await;
            Ok(Action::await_change())
        }
        managed_diff::Cleanup::DeleteFromBrokers => {
            let b = match brokers(ctx, ns, obj.cluster_ref()).await? {
                Ok(b) => b,
                Err(p) => {
                    // The cluster is there but cannot be logged into: do not wedge the deletion.
                    let note = format!("{name} not deleted from the brokers: {}", p.message);
                    publish(&ctx.recorder, obj, EventType::Warning, "CleanupSkipped", "Delete", note).await;
                    return Ok(Action::await_change());
                }
            };
            let results = join_all(ready_ips(&b.pods).into_iter().filter_map(|(pod, ip)| ip.map(|ip| (pod, ip))).map(
                |(pod, ip)| {
                    let (b, name) = (&b, &name);
                    async move {
                        let client = admin_client(ctx, &b.cluster, &ip, &b.creds);
                        let r = K::delete(&client, name).await;
                        if r.is_ok() {
                            ctx.metrics.broker_write(K::CONTROLLER, "delete");
                        }
                        (pod, r)
                    }
                },
            ))
            .await;
            let failed: Vec<String> =
                results.iter().filter_map(|(pod, r)| r.as_ref().err().map(|e| format!("{pod}: {e}"))).collect();
            if !failed.is_empty() {
                return Err(Error::Brokers(format!("deleting {name}: {}", failed.join("; "))));
            }
            let note = format!("Deleted {name} from {} brokers", results.len());
            publish(&ctx.recorder, obj, EventType::Normal, "Deleted", "Delete", note).await;
            Ok(Action::await_change())
        }
    }
}

/// Writes the status through the status subresource when it differs from the stored one.
async fn write_status<K: ManagedKind>(obj: &K, ctx: &ManagedContext, ns: &str, status: &ManagedStatus) -> Result<()> {
    if obj.managed_status() == Some(status) {
        return Ok(());
    }
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    Api::<K>::namespaced(ctx.client.clone(), ns)
        .patch_status(&obj.name_any(), &PatchParams::apply(MANAGER).force(), &Patch::Apply(&patch))
        .await?;
    Ok(())
}

/// Reconciles are triggered by spec changes, the pause annotation, deletion and the
/// finalizer being added: not by the operator's own status writes.
fn trigger_hash<K: ManagedKind>(obj: &K) -> Option<u64> {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    obj.meta().generation.hash(&mut h);
    obj.meta().deletion_timestamp.is_some().hash(&mut h);
    obj.finalizers().hash(&mut h);
    Some(h.finish())
}

/// What about a BrokerCluster makes its objects worth a look: a new cluster of the name (uid),
/// a spec change (generation) and deletion. Not its status, which changes with every
/// connection count and would reconcile every object of the cluster each time.
fn cluster_trigger(bc: &BrokerCluster) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bc.meta().uid.hash(&mut h);
    bc.meta().generation.hash(&mut h);
    bc.meta().deletion_timestamp.is_some().hash(&mut h);
    h.finish()
}

/// The clusters' watch events that matter to their objects: every deletion, and an applied
/// cluster only when [`cluster_trigger`] changed since its last event.
fn cluster_changes(
    seen: &Mutex<HashMap<(Option<String>, String), u64>>,
    event: watcher::Event<BrokerCluster>,
) -> Option<BrokerCluster> {
    let mut seen = seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    match event {
        watcher::Event::Apply(bc) | watcher::Event::InitApply(bc) => {
            let key = (bc.namespace(), bc.name_any());
            let trigger = cluster_trigger(&bc);
            (seen.insert(key, trigger) != Some(trigger)).then_some(bc)
        }
        watcher::Event::Delete(bc) => {
            seen.remove(&(bc.namespace(), bc.name_any()));
            Some(bc)
        }
        watcher::Event::Init | watcher::Event::InitDone => None,
    }
}

/// The objects of kind `K` in `ns` that reference cluster `cluster`.
fn referencing<K: ManagedKind>(store: &Store<K>, ns: Option<String>, cluster: &str) -> Vec<ObjectRef<K>> {
    store
        .state()
        .iter()
        .filter(|o| o.namespace() == ns && o.cluster_ref() == cluster)
        .map(|o| ObjectRef::from_obj(&**o))
        .collect()
}

/// Runs the controller of kind `K` in one namespace (or all) until `stop`.
pub async fn run<K: ManagedKind>(
    client: kube::Client,
    ns: Option<String>,
    ctx: Arc<ManagedContext>,
    concurrency: u16,
    stop: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let api = |client: &kube::Client| -> Api<K> {
        match &ns {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    };
    let (reader, writer) = reflector::store();
    let objects = watcher(api(&client), watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .predicate_filter(trigger_hash::<K>.combine(predicates::annotations), Default::default());
    let clusters: Api<BrokerCluster> = match &ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let pods: Api<Pod> = match &ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let broker_pods =
        watcher::Config::default().labels(&format!("{LABEL_NAME}={APP_NAME},{LABEL_MANAGED_BY}={MANAGER}"));
    let seen = Mutex::new(HashMap::new());
    let cluster_events = watcher(clusters, watcher::Config::default())
        .default_backoff()
        .filter_map(move |event| futures::future::ready(event.ok().and_then(|e| cluster_changes(&seen, e))))
        .map(Ok::<_, watcher::Error>);
    let (by_pod, by_cluster, count) = (reader.clone(), reader.clone(), reader.clone());
    let metrics = ctx.metrics.clone();
    Controller::for_stream(objects, reader)
        .with_config(controller::Config::default().concurrency(concurrency).debounce(Duration::from_millis(500)))
        // A broker pod coming, going, restarting or turning Ready: every object of its cluster.
        .watches(pods, broker_pods, move |pod: Pod| {
            let cluster = pod.labels().get(LABEL_INSTANCE).cloned().unwrap_or_default();
            referencing(&by_pod, pod.namespace(), &cluster)
        })
        // A cluster appearing (again), its spec changing or it going: its objects.
        .watches_stream(cluster_events, move |bc: BrokerCluster| {
            referencing(&by_cluster, bc.namespace(), &bc.name_any())
        })
        .graceful_shutdown_on(stop)
        .run(reconcile::<K>, error_policy::<K>, ctx)
        .for_each(move |result| {
            metrics.managed.get_or_create(&ControllerLabels { controller: K::CONTROLLER }).set(count.len() as i64);
            if let Err(e) = result {
                debug!(error = %e, "controller event");
            }
            futures::future::ready(())
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cluster(uid: &str, generation: i64, ready: i32) -> BrokerCluster {
        serde_json::from_value(json!({
            "apiVersion": "starling.dev/v1alpha1", "kind": "BrokerCluster",
            "metadata": {"name": "demo", "namespace": "mqtt", "uid": uid, "generation": generation},
            "spec": {"replicas": 3},
            "status": {"readyReplicas": ready}
        }))
        .unwrap()
    }

    #[test]
    fn only_new_clusters_spec_changes_and_deletions_reach_the_objects() {
        let seen = Mutex::new(HashMap::new());
        let passes = |e| cluster_changes(&seen, e).is_some();
        assert!(passes(watcher::Event::InitApply(cluster("a", 1, 0))), "first sight");
        assert!(!passes(watcher::Event::Apply(cluster("a", 1, 3))), "a status change alone");
        assert!(passes(watcher::Event::Apply(cluster("a", 2, 3))), "a spec change");
        assert!(passes(watcher::Event::Delete(cluster("a", 2, 3))), "deletion");
        assert!(passes(watcher::Event::Apply(cluster("b", 1, 0))), "recreated under the same name");
        assert!(!passes(watcher::Event::InitDone));
    }
}
