//! The operator process: the Kubernetes client, the HTTP endpoints, leader election on a Lease,
//! and the controllers for the watched namespaces, until shutdown or loss of leadership.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crds::broker_cluster::BrokerCluster;
use crds::managed::{BridgeResource, RuleResource, TrafficRuleResource};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, ListParams};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, Predicate, WatchStreamExt, controller, predicates, reflector, watcher};
use kube::{Client, Resource, ResourceExt};
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::controllers::broker_cluster::{self, CONTROLLER, Context, ImageDefaults};
use crate::controllers::managed::{self, ManagedContext};
use crate::metrics::{ControllerLabels, Metrics};
use crate::resources::{APP_NAME, LABEL_INSTANCE, LABEL_MANAGED_BY, LABEL_NAME, MANAGER};
use crate::server::{self, Health};
use crate::{Error, Result};

/// How the operator runs.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// Namespaces to watch; empty for all.
    pub namespaces: Vec<String>,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub http_addr: SocketAddr,
    /// Take the Lease before reconciling (off only for a single local replica).
    pub leader_election: bool,
    pub lease_name: String,
    pub lease_namespace: String,
    /// This replica's name in the Lease and in Events (the pod name in a cluster).
    pub identity: String,
    pub images: ImageDefaults,
    /// Reconciles running at once.
    pub concurrency: u16,
}

/// Runs until `shutdown` resolves (then stops gracefully and releases the Lease) or the
/// Lease is lost (an error: the process should exit and be restarted as a follower).
pub async fn run(cfg: RunConfig, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
    run_with_client(cfg, Client::try_default().await?, shutdown).await
}

/// [`run`] with a given client (tests point it at a kubeconfig of their choosing).
pub async fn run_with_client(
    cfg: RunConfig,
    client: Client,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let metrics = Arc::new(Metrics::default());
    let health = Health { metrics: metrics.clone(), ready: Default::default() };

    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let server = tokio::spawn(server::serve(cfg.http_addr, health.clone(), stopped(stop_rx.clone())));
    tokio::spawn(wait_until_ready(client.clone(), cfg.namespaces.first().cloned(), health.clone()));

    let result = if cfg.leader_election {
        lead_then_run(&cfg, client, metrics, stop_rx.clone()).await
    } else {
        run_controllers(&cfg, client, metrics, stopped(stop_rx.clone())).await;
        Ok(())
    };
    match server.await {
        Ok(Err(e)) => warn!(error = %e, "HTTP endpoints stopped"),
        Err(e) => warn!(error = %e, "HTTP endpoints task failed"),
        Ok(Ok(())) => {}
    }
    result
}

/// Resolves once `stop` turns true (or its sender is gone).
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Marks the operator ready once the API server answers and the BrokerCluster CRD is served.
async fn wait_until_ready(client: Client, namespace: Option<String>, health: Health) {
    let api: Api<BrokerCluster> = match &namespace {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    };
    loop {
        match api.list(&ListParams::default().limit(1)).await {
            Ok(_) => {
                health.ready.store(true, Ordering::Relaxed);
                return;
            }
            Err(e) => warn!(error = %e, "cannot list BrokerClusters yet (is the CRD installed?)"),
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

/// Waits for the Lease, runs the controllers while holding it.
async fn lead_then_run(
    cfg: &RunConfig,
    client: Client,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    let manager = LeaseManagerBuilder::new(client.clone(), &cfg.lease_name)
        .with_namespace(&cfg.lease_namespace)
        .with_identity(&cfg.identity)
        .with_field_manager(MANAGER)
        .with_duration(15)
        .with_grace(5)
        .build()
        .await?;
    let (mut leader, task) = manager.watch().await;
    info!(lease = %format!("{}/{}", cfg.lease_namespace, cfg.lease_name), identity = %cfg.identity, "waiting for the leader Lease");
    let got_it = tokio::select! {
        r = leader.wait_for(|l| *l) => Some(r.is_ok()),
        _ = stop.wait_for(|s| *s) => None,
    };
    match got_it {
        Some(true) => {}
        Some(false) => return Err(Error::LostLeadership),
        None => {
            drop(leader);
            let _ = task.await;
            return Ok(());
        }
    }
    info!("leader: starting the controllers");
    metrics.leader.set(1);
    let (lost_tx, lost_rx) = watch::channel(false);
    let mut watch_leader = leader.clone();
    let lost = tokio::spawn(async move {
        let _ = watch_leader.wait_for(|l| !*l).await;
        let _ = lost_tx.send(true);
    });
    let stop_or_lost = {
        let mut stop = stop.clone();
        let mut lost_rx = lost_rx.clone();
        async move {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => {}
                _ = lost_rx.wait_for(|l| *l) => {}
            }
        }
    };
    run_controllers(cfg, client, metrics.clone(), stop_or_lost).await;
    metrics.leader.set(0);
    lost.abort();
    let was_lost = *lost_rx.borrow();
    // Dropping the receivers makes the manager release the Lease, so a follower takes over at once.
    drop(leader);
    match task.await {
        Ok(Ok(_)) => info!("released the leader Lease"),
        Ok(Err(e)) => warn!(error = %e, "releasing the leader Lease"),
        Err(e) => warn!(error = %e, "leader election task failed"),
    }
    if was_lost { Err(Error::LostLeadership) } else { Ok(()) }
}

/// The BrokerCluster, Bridge, Rule and TrafficRule controllers per watched namespace (or one
/// of each for all), until `stop`.
async fn run_controllers(
    cfg: &RunConfig,
    client: Client,
    metrics: Arc<Metrics>,
    stop: impl Future<Output = ()> + Send + 'static,
) {
    let reporter = Reporter { controller: MANAGER.into(), instance: Some(cfg.identity.clone()) };
    let recorder = Recorder::new(client.clone(), reporter);
    let http = match crate::admin_client::http_client() {
        Ok(h) => h,
        Err(e) => {
            warn!(error = %e, "cannot build the HTTP client; using reqwest's defaults");
            reqwest::Client::new()
        }
    };
    let managed_ctx = Arc::new(ManagedContext::new(client.clone(), http.clone(), recorder.clone(), metrics.clone()));
    let ctx = Arc::new(Context::new(client.clone(), http, recorder, metrics.clone(), cfg.images.clone()));
    let scopes: Vec<Option<String>> =
        if cfg.namespaces.is_empty() { vec![None] } else { cfg.namespaces.iter().cloned().map(Some).collect() };
    let stop = futures::future::FutureExt::shared(Box::pin(stop));
    let mut runs: Vec<std::pin::Pin<Box<dyn Future<Output = ()> + Send>>> = Vec::new();
    for ns in scopes {
        info!(namespace = ns.as_deref().unwrap_or("(all)"), "watching BrokerClusters, Bridges, Rules and TrafficRules");
        let (c, n, m, k) = (client.clone(), ns.clone(), managed_ctx.clone(), cfg.concurrency);
        runs.push(Box::pin(broker_cluster_controller(client.clone(), ns, ctx.clone(), k, stop.clone())));
        runs.push(Box::pin(managed::run::<BridgeResource>(c.clone(), n.clone(), m.clone(), k, stop.clone())));
        runs.push(Box::pin(managed::run::<RuleResource>(c.clone(), n.clone(), m.clone(), k, stop.clone())));
        runs.push(Box::pin(managed::run::<TrafficRuleResource>(c, n, m, k, stop.clone())));
    }
    futures::future::join_all(runs).await;
    info!("controllers stopped");
}

fn api<K>(client: &Client, ns: &Option<String>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

async fn broker_cluster_controller(
    client: Client,
    ns: Option<String>,
    ctx: Arc<Context>,
    concurrency: u16,
    stop: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let (reader, writer) = reflector::store();
    // Spec and annotation (pause) changes trigger a reconcile; the operator's own status
    // writes do not (they would trigger it again for nothing).
    let clusters = watcher(api::<BrokerCluster>(&client, &ns), watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .predicate_filter(predicates::generation.combine(predicates::annotations), Default::default());
    // Only the objects this operator made (the label keeps the caches small).
    let owned = watcher::Config::default().labels(&format!("{LABEL_MANAGED_BY}={MANAGER}"));
    let broker_pods =
        watcher::Config::default().labels(&format!("{LABEL_NAME}={APP_NAME},{LABEL_MANAGED_BY}={MANAGER}"));
    let store = reader.clone();
    let metrics = ctx.metrics.clone();
    Controller::for_stream(clusters, reader)
        .with_config(controller::Config::default().concurrency(concurrency).debounce(Duration::from_millis(500)))
        .owns(api::<StatefulSet>(&client, &ns), owned.clone())
        .owns(api::<Service>(&client, &ns), owned.clone())
        .owns(api::<ConfigMap>(&client, &ns), owned.clone())
        .owns(api::<Secret>(&client, &ns), owned.clone())
        .owns(api::<PodDisruptionBudget>(&client, &ns), owned)
        // A broker pod coming, going or changing readiness: configure it (or report it) now.
        .watches(api::<Pod>(&client, &ns), broker_pods, |pod: Pod| {
            let cluster = pod.labels().get(LABEL_INSTANCE)?.clone();
            Some(ObjectRef::<BrokerCluster>::new(&cluster).within(&pod.namespace()?))
        })
        .graceful_shutdown_on(stop)
        .run(broker_cluster::reconcile, broker_cluster::error_policy, ctx)
        .for_each(|result| {
            metrics.managed.get_or_create(&ControllerLabels { controller: CONTROLLER }).set(store.len() as i64);
            if let Err(e) = result {
                tracing::debug!(error = %e, "controller event");
            }
            futures::future::ready(())
        })
        .await;
}
