//! The BrokerCluster controller: applies the owned objects, configures every Ready broker
//! through its management API, and reports status and Events (`reconcile` reads top to bottom).

use std::sync::Arc;
use std::time::{Duration, Instant};

use crds::broker_cluster::{BrokerCluster, BrokerClusterSpec, Phase};
use futures::future::join_all;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{EventType, Recorder};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{debug, info, warn};

use super::diff::{self, BrokerFacts, NodeReport, Observed, Problem};
use super::{FailureCounts, now, publish};
use crate::admin_client::{AdminClient, AdminError, Retry};
use crate::metrics::Metrics;
use crate::resources::admin_secret::{self, AdminCredentials};
use crate::resources::stateful_set::PodInputs;
use crate::resources::{
    MANAGER, Names, PAUSE_ANNOTATION, client_service, config_map, digest, headless_service, pod_disruption_budget,
    selector_string, stateful_set,
};
use crate::{Error, Result};

/// The controller's name in metrics and logs.
pub const CONTROLLER: &str = "brokercluster";

/// How often a Ready cluster is looked at again (drift in the brokers' settings or
/// membership is corrected then, and the per-node figures refreshed).
pub const RESYNC: Duration = Duration::from_secs(60);
/// How soon a cluster that is not Ready yet is looked at again.
pub const PROGRESS_CHECK: Duration = Duration::from_secs(10);

/// Where the broker image comes from when a spec names none.
#[derive(Clone, Debug)]
pub struct ImageDefaults {
    /// e.g. `starling/broker`.
    pub repository: String,
    /// The tag when the spec gives no `version`.
    pub version: String,
}

impl ImageDefaults {
    /// The spec's image, else `<repository>:<spec.version or default version>`.
    pub fn resolve(&self, spec: &BrokerClusterSpec) -> String {
        match (&spec.image, &spec.version) {
            (Some(image), _) if !image.is_empty() => image.clone(),
            (_, Some(v)) if !v.is_empty() => format!("{}:{v}", self.repository),
            _ => format!("{}:{}", self.repository, self.version),
        }
    }
}

/// What every reconcile shares.
pub struct Context {
    pub client: kube::Client,
    /// One connection pool for every broker's management API.
    pub http: reqwest::Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub images: ImageDefaults,
    pub admin_retry: Retry,
    /// Consecutive failures per object (`namespace/name`), for [`error_policy`].
    failures: FailureCounts,
}

impl Context {
    pub fn new(
        client: kube::Client,
        http: reqwest::Client,
        recorder: Recorder,
        metrics: Arc<Metrics>,
        images: ImageDefaults,
    ) -> Context {
        Context {
            client,
            http,
            recorder,
            metrics,
            images,
            admin_retry: Retry::default(),
            failures: FailureCounts::default(),
        }
    }
}

fn key(bc: &BrokerCluster) -> String {
    format!("{}/{}", bc.namespace().unwrap_or_default(), bc.name_any())
}

/// After a failed reconcile: try again after a per-object exponential back-off (5 s doubling
/// to 5 min), reset by the next success.
pub fn error_policy(bc: Arc<BrokerCluster>, error: &Error, ctx: Arc<Context>) -> Action {
    let failures = ctx.failures.failed(key(&bc));
    let delay = diff::backoff_delay(failures);
    warn!(cluster = %key(&bc), %error, failures, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// Brings one BrokerCluster's objects and brokers to what its spec says.
pub async fn reconcile(bc: Arc<BrokerCluster>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    let result = reconcile_cluster(&bc, &ctx).await;
    ctx.metrics.reconciled(CONTROLLER, started.elapsed(), result.as_ref().err().map(Error::kind));
    match &result {
        Ok(_) => ctx.failures.succeeded(&key(&bc)),
        Err(e) => publish(&ctx.recorder, &*bc, EventType::Warning, "ReconcileFailed", "Reconcile", e.to_string()).await,
    }
    result
}

async fn reconcile_cluster(bc: &BrokerCluster, ctx: &Context) -> Result<Action> {
    let ns = bc.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
    let name = bc.name_any();
    if bc.metadata.deletion_timestamp.is_some() {
        // Everything it owns goes with it (owner references); nothing to do.
        return Ok(Action::await_change());
    }
    if bc.annotations().get(PAUSE_ANNOTATION).is_some_and(|v| v == "true") {
        info!(cluster = %key(bc), "reconciliation paused by annotation {PAUSE_ANNOTATION}; no writes");
        return Ok(Action::await_change());
    }
    debug!(cluster = %key(bc), generation = ?bc.metadata.generation, "reconciling");
    let client = ctx.client.clone();

    // 1. The admin credentials: the Secret the spec names, or one generated once.
    let admin = match admin_credentials(bc, ctx, &ns).await? {
        Ok(admin) => admin,
        Err(problem) => {
            let status = diff::status(bc, &Observed { problem: Some(problem.clone()), ..Observed::default() }, &now());
            write_status(bc, ctx, &ns, status).await?;
            return Ok(Action::requeue(PROGRESS_CHECK * 3));
        }
    };

    // 2. The owned objects, server-side applied (drift in them is undone here too).
    apply(&Api::<ConfigMap>::namespaced(client.clone(), &ns), &config_map::config_map(bc)).await?;
    apply(&Api::<Service>::namespaced(client.clone(), &ns), &headless_service::headless_service(bc)).await?;
    apply(&Api::<Service>::namespaced(client.clone(), &ns), &client_service::client_service(bc)).await?;
    let image = ctx.images.resolve(&bc.spec);
    let restart_hash = digest(&[&config_map::broker_config(bc, false), &admin.credentials_file]);
    let inputs = PodInputs { image: &image, restart_hash: &restart_hash, admin_secret: &admin.secret };
    let sts =
        apply(&Api::<StatefulSet>::namespaced(client.clone(), &ns), &stateful_set::stateful_set(bc, &inputs)).await?;
    let pdbs = Api::<PodDisruptionBudget>::namespaced(client.clone(), &ns);
    match pod_disruption_budget::pod_disruption_budget(bc) {
        Some(pdb) => drop(apply(&pdbs, &pdb).await?),
        None => delete_owned(&pdbs, &Names::of(bc).pod_disruption_budget, bc).await?,
    }

    // 3. The brokers: each Ready one gets its membership and the spec's settings.
    let pods =
        Api::<Pod>::namespaced(client.clone(), &ns).list(&ListParams::default().labels(&selector_string(bc))).await?;
    let mut pods = pods.items;
    pods.sort_by_key(|p| ordinal(&p.name_any()));
    let nodes = join_all(pods.iter().map(|pod| configure_broker(bc, pod, &admin.creds, ctx))).await;
    announce_writes(bc, ctx, &nodes).await;

    // 4. Status (written only when it changed) and the Events of a phase change.
    let observed = Observed { stateful_set: Some(&sts), nodes: &nodes, problem: None };
    let status = diff::status(bc, &observed, &now());
    let phase = status.phase;
    write_status(bc, ctx, &ns, status).await?;

    // 5. Come back: soon while things are moving, at the resync period when Ready.
    info!(cluster = %format!("{ns}/{name}"), phase = ?phase, "reconciled");
    Ok(Action::requeue(if phase == Some(Phase::Ready) { RESYNC } else { PROGRESS_CHECK }))
}

/// The admin Secret in use and what it holds.
struct Admin {
    secret: String,
    creds: AdminCredentials,
    /// The broker's `credentials.toml`, part of the restart hash (new credentials need a
    /// restart: the broker reads the file at start).
    credentials_file: String,
}

/// Reads the admin Secret, generating it first when the spec names none. A named Secret that
/// is missing or incomplete is a [`Problem`] for the status, not an error to retry hot.
async fn admin_credentials(bc: &BrokerCluster, ctx: &Context, ns: &str) -> Result<Result<Admin, Problem>> {
    let secrets = Api::<Secret>::namespaced(ctx.client.clone(), ns);
    let name = Names::admin_secret(bc);
    let secret = match secrets.get_opt(&name).await? {
        Some(s) => s,
        None if bc.spec.admin.credentials_secret.is_some() => {
            return Ok(Err(Problem {
                reason: "AdminSecretMissing",
                message: format!("Secret {name} (spec.admin.credentialsSecret) not found"),
            }));
        }
        None => {
            let creds = AdminCredentials::generate();
            let password = creds.password.clone();
            // argon2 is deliberately slow: off the async threads.
            let hash = tokio::task::spawn_blocking(move || admin_secret::hash_password(&password))
                .await
                .map_err(|e| Error::Credentials(format!("hashing task: {e}")))??;
            let secret = admin_secret::admin_secret(bc, &creds, &hash);
            match secrets
                .create(&PostParams { field_manager: Some(MANAGER.into()), ..PostParams::default() }, &secret)
                .await
            {
                Ok(created) => {
                    let note = format!("Generated admin credentials in Secret {name}");
                    publish(&ctx.recorder, bc, EventType::Normal, "AdminSecretCreated", "Create", note).await;
                    created
                }
                // Someone (another replica during a hand-over) was faster: use theirs.
                Err(kube::Error::Api(e)) if e.code == 409 => secrets.get(&name).await?,
                Err(e) => return Err(e.into()),
            }
        }
    };
    Ok(match admin_secret::read_admin_secret(&secret) {
        Ok((creds, credentials_file)) => Ok(Admin { secret: name, creds, credentials_file }),
        Err(e) => Err(Problem { reason: "AdminSecretInvalid", message: e.to_string() }),
    })
}

/// One pod: observed, and when Ready, configured through its management API.
async fn configure_broker(bc: &BrokerCluster, pod: &Pod, creds: &AdminCredentials, ctx: &Context) -> NodeReport {
    let mut report = diff::observe_pod(pod);
    let Some(ip) = report.ip.clone().filter(|_| report.pod_ready) else { return report };
    let host = if ip.contains(':') { format!("[{ip}]") } else { ip };
    let client = AdminClient::new(ctx.http.clone(), format!("http://{host}:{}", bc.spec.admin.port), creds.clone())
        .with_retry(ctx.admin_retry)
        .with_metrics(ctx.metrics.clone());
    let result = sync_broker(bc, &report.pod, &client).await;
    if let Err(e) = &result {
        warn!(cluster = %key(bc), pod = %report.pod, error = %e, "configuring the broker failed");
    }
    report.api = Some(result.map_err(|e| e.to_string()));
    report
}

/// Membership, then settings (each written only when it differs), then the node's figures.
async fn sync_broker(bc: &BrokerCluster, pod: &str, client: &AdminClient) -> Result<BrokerFacts, AdminError> {
    let mut facts = BrokerFacts::default();
    let desired = diff::membership_for(bc, pod);
    if diff::membership_differs(&client.cluster().await?, &desired) {
        client.set_cluster(&desired).await?;
        facts.wrote_membership = true;
    }
    if let Some(want) = &bc.spec.settings
        && diff::settings_differ(&client.settings().await?, want)
    {
        client.set_settings(want).await?;
        facts.wrote_settings = true;
    }
    if let Some(node) = client.brokers().await?.into_iter().next() {
        facts.version = node.version;
        facts.connections = node.connections;
    }
    Ok(facts)
}

/// Events for what was written to the brokers this pass.
async fn announce_writes(bc: &BrokerCluster, ctx: &Context, nodes: &[NodeReport]) {
    let wrote = |f: fn(&BrokerFacts) -> bool| -> Vec<&str> {
        nodes.iter().filter(|n| matches!(&n.api, Some(Ok(facts)) if f(facts))).map(|n| n.pod.as_str()).collect()
    };
    let settings = wrote(|f| f.wrote_settings);
    if !settings.is_empty() {
        let note = format!("Applied spec.settings without a restart to {}", settings.join(", "));
        publish(&ctx.recorder, bc, EventType::Normal, "SettingsApplied", "Configure", note).await;
    }
    let membership = wrote(|f| f.wrote_membership);
    if !membership.is_empty() {
        let note = format!("Set cluster membership ({} members) on {}", bc.spec.replicas, membership.join(", "));
        publish(&ctx.recorder, bc, EventType::Normal, "MembershipUpdated", "Configure", note).await;
    }
}

/// Writes the status through the status subresource when it differs from the stored one, and
/// announces a change of phase (or of the reason for being Degraded) as an Event.
async fn write_status(
    bc: &BrokerCluster,
    ctx: &Context,
    ns: &str,
    status: crds::broker_cluster::BrokerClusterStatus,
) -> Result<()> {
    if bc.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let api = Api::<BrokerCluster>::namespaced(ctx.client.clone(), ns);
    let patch = serde_json::json!({
        "apiVersion": BrokerCluster::api_version(&()),
        "kind": BrokerCluster::kind(&()),
        "status": status,
    });
    api.patch_status(&bc.name_any(), &PatchParams::apply(MANAGER).force(), &Patch::Apply(&patch)).await?;

    let old = bc.status.as_ref();
    let degraded = diff::condition(Some(&status), diff::DEGRADED).filter(|c| c.status == "True");
    let old_degraded = diff::condition(old, diff::DEGRADED).filter(|c| c.status == "True");
    if let Some(d) = degraded {
        if old_degraded.map(|o| (&o.reason, &o.message)) != Some((&d.reason, &d.message)) {
            publish(&ctx.recorder, bc, EventType::Warning, &d.reason, "Reconcile", d.message.clone()).await;
        }
    } else if status.phase != old.and_then(|s| s.phase) {
        let (reason, note) = match status.phase {
            Some(Phase::Ready) => ("Ready", format!("All {} brokers ready and configured", bc.spec.replicas)),
            _ => {
                let c = diff::condition(Some(&status), diff::PROGRESSING);
                (c.map_or("Progressing", |c| c.reason.as_str()), c.map(|c| c.message.clone()).unwrap_or_default())
            }
        };
        publish(&ctx.recorder, bc, EventType::Normal, reason, "Reconcile", note).await;
    }
    Ok(())
}

/// Server-side apply under the operator's field manager; returns the object as stored.
async fn apply<K>(api: &Api<K>, obj: &K) -> Result<K>
where
    K: Resource + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
{
    let name = obj.meta().name.clone().ok_or(Error::MissingField("metadata.name"))?;
    Ok(api.patch(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(obj)).await?)
}

/// Deletes `name` if it exists and this cluster controls it.
async fn delete_owned<K>(api: &Api<K>, name: &str, bc: &BrokerCluster) -> Result<()>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let Some(obj) = api.get_opt(name).await? else { return Ok(()) };
    let uid = bc.uid();
    if obj.owner_references().iter().any(|o| o.controller == Some(true) && Some(&o.uid) == uid.as_ref()) {
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn ordinal(pod: &str) -> i64 {
    pod.rsplit_once('-').and_then(|(_, n)| n.parse().ok()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::testing::cluster;

    #[test]
    fn image_comes_from_the_spec_or_the_defaults() {
        let d = ImageDefaults { repository: "starling/broker".into(), version: "0.1.0".into() };
        let spec = |v: serde_json::Value| cluster("demo", v).spec;
        assert_eq!(d.resolve(&spec(serde_json::json!({}))), "starling/broker:0.1.0");
        assert_eq!(d.resolve(&spec(serde_json::json!({"version": "0.2.0"}))), "starling/broker:0.2.0");
        assert_eq!(
            d.resolve(&spec(serde_json::json!({"image": "reg.example/starling:x", "version": "0.2.0"}))),
            "reg.example/starling:x"
        );
    }

    #[test]
    fn pods_sort_by_ordinal() {
        let mut pods = vec!["demo-10", "demo-2", "demo-0"];
        pods.sort_by_key(|p| ordinal(p));
        assert_eq!(pods, ["demo-0", "demo-2", "demo-10"]);
    }
}
