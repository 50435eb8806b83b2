//! The chart's in-cluster operator on a live BrokerCluster: scaling 3→5→2 with membership on
//! every pod, then a Bridge to a Mosquitto process on the host, a republishing Rule, a Rule
//! with bad SQL and a connection-limiting TrafficRule, each checked on real traffic through every
//! pod; a pod killed by hand and a rule deleted by hand get their objects back; deleting the
//! resources cleans every broker.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crds::broker_cluster::{BrokerCluster, Phase};
use crds::managed::{BridgeResource, CONDITION_READY, ManagedStatus, RuleResource, TrafficRuleResource};
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use starling_e2e::mqtt::Session;
use starling_e2e::remote::{Mosquitto, REMOTE_PORT};
use starling_operator::admin_client::{AdminClient, http_client};
use starling_operator::controllers::managed::ManagedKind;
use starling_operator::resources::admin_secret::read_admin_secret;

use crate::harness::Env;
use crate::operator::{Res, kube_client, wait_for};

const NS: &str = "starling-live";
const CLUSTER: &str = "live";
const SELECTOR: &str = "app.kubernetes.io/instance=live";
const T: Duration = Duration::from_secs(10);

pub fn objects_reach_every_broker_and_follow_scaling_pod_loss_drift_and_deletion(env: &Env) -> anyhow::Result<()> {
    starling_e2e::demo::install_chart(&env.kubectl, &env.helm, Duration::from_secs(180))?;
    let host_ip = env.host_ip()?;
    let remote = Mosquitto::start(&host_ip, REMOTE_PORT)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let kubeconfig = env.kubectl.kubeconfig().to_path_buf();
    let result = runtime.block_on(async move {
        let client = kube_client(&kubeconfig).await?;
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let _ = namespaces.delete(NS, &DeleteParams::default()).await;
        wait_for("a leftover namespace to go", Duration::from_secs(120), || {
            let namespaces = namespaces.clone();
            async move { Ok(namespaces.get_opt(NS).await?.is_none().then_some(())) }
        })
        .await?;
        namespaces.create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": NS}}))?).await?;
        let outcome = scenario(client.clone(), &host_ip).await;
        let _ = namespaces.delete(NS, &DeleteParams::default()).await;
        outcome
    });
    drop(remote);
    if result.is_err() {
        eprintln!("{}", env.kubectl.diagnostics(NS));
    }
    result.map_err(|e| anyhow::anyhow!("{e}"))
}

async fn scenario(client: Client, host_ip: &str) -> Res {
    let clusters: Api<BrokerCluster> = Api::namespaced(client.clone(), NS);
    let bc: BrokerCluster = serde_json::from_value(json!({
        "apiVersion": "starling.dev/v1alpha1", "kind": "BrokerCluster",
        "metadata": {"name": CLUSTER},
        "spec": {
            "replicas": 3,
            "persistence": {"ephemeral": true},
            "resources": {"requests": {"cpu": "20m", "memory": "32Mi"}, "limits": {"memory": "256Mi"}},
        }
    }))?;
    clusters.create(&PostParams::default(), &bc).await?;
    let brokers = Brokers::new(client.clone()).await?;

    // Scaling: every pod that is there knows exactly the others.
    for replicas in [3, 5, 2] {
        if replicas != 3 {
            let patch = json!({"spec": {"replicas": replicas}});
            clusters.patch(CLUSTER, &PatchParams::default(), &Patch::Merge(patch)).await?;
        }
        let t = Instant::now();
        ready_with(&clusters, replicas).await?;
        let pods = brokers.ready_pods(replicas as usize).await?;
        for (pod, admin) in &pods {
            let m = wait_for(&format!("{pod} to know {replicas} members"), Duration::from_secs(30), || async {
                let m = admin.cluster().await?;
                Ok((m.members.len() == replicas as usize).then_some(m))
            })
            .await?;
            assert_eq!(&m.node, pod);
        }
        eprintln!("[e2e]   {replicas} replicas Ready with full membership after {:.1}s", t.elapsed().as_secs_f64());
    }

    // The four managed objects.
    let remote = format!("mqtt-tcp://{host_ip}:{REMOTE_PORT}");
    apply::<BridgeResource>(
        &client,
        json!({
            "apiVersion": "starling.dev/v1alpha1", "kind": "Bridge", "metadata": {"name": "uplink"},
            "spec": {"clusterRef": CLUSTER, "bridge": {
                "server": remote, "proto_ver": 4,
                "forwards": [{"local_topic": "up/#", "remote_topic": "k8s/${topic}"}],
                "subscriptions": [{"remote_topic": "down/#"}]}}
        }),
    )
    .await?;
    apply::<RuleResource>(
        &client,
        json!({
            "apiVersion": "starling.dev/v1alpha1", "kind": "Rule", "metadata": {"name": "echo"},
            "spec": {"clusterRef": CLUSTER, "rule": {"rawsql": "SELECT topic, payload FROM \"rin/#\"",
                     "actions": [{"name": "republish", "params": {"topic": "rout/${topic}", "payload": "${payload}"}}]}}
        }),
    )
    .await?;
    apply::<RuleResource>(
        &client,
        json!({
            "apiVersion": "starling.dev/v1alpha1", "kind": "Rule", "metadata": {"name": "bad-sql"},
            "spec": {"clusterRef": CLUSTER, "rule": {"rawsql": "SELEC topic FRM \"x\"",
                     "actions": [{"name": "republish", "params": {"topic": "never"}}]}}
        }),
    )
    .await?;
    apply::<TrafficRuleResource>(
        &client,
        json!({
            "apiVersion": "starling.dev/v1alpha1", "kind": "TrafficRule", "metadata": {"name": "one-sensor"},
            "spec": {"clusterRef": CLUSTER, "trafficRule": {"client_id_pattern": "limited-*", "max_connections": 1}}
        }),
    )
    .await?;
    synced::<BridgeResource>(&client, "uplink").await?;
    synced::<RuleResource>(&client, "echo").await?;
    synced::<TrafficRuleResource>(&client, "one-sensor").await?;

    // Bad SQL: the broker's own message in the Rule's status, on no broker.
    let bad = wait_for("Rule bad-sql to report the broker's error", Duration::from_secs(60), || async {
        let r = Api::<RuleResource>::namespaced(client.clone(), NS).get("bad-sql").await?;
        let status = r.status.unwrap_or_default();
        Ok(ready_condition(&status).filter(|(s, _, _)| s == "False"))
    })
    .await?;
    assert!(bad.2.to_lowercase().contains("sql"), "the condition should carry the broker's SQL error: {bad:?}");
    eprintln!("[e2e]   Rule bad-sql: Ready=False {}: {}", bad.1, bad.2);
    for (pod, admin) in brokers.ready_pods(2).await? {
        assert!(admin.rule("bad-sql").await?.is_none(), "{pod} must not hold the rejected rule");
    }
    // It is retried with back-off while it exists; deleting it is not held up by the rejection.
    delete::<RuleResource>(&client, "bad-sql").await?;

    // Each pod: the rule republishes, the bridge carries both ways, the traffic rule limits.
    let pods = brokers.ready_pods(2).await?;
    for (pod, _) in &pods {
        let ip = brokers.ip(pod).await?;
        check_traffic(ip, host_ip).await.map_err(|e| format!("{pod}: {e}"))?;
    }
    eprintln!("[e2e]   Rule, Bridge and TrafficRule work on every pod");

    // A pod killed by hand comes back empty (emptyDir) and gets every object again.
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), NS);
    let victim = format!("{CLUSTER}-0");
    let old_uid = pods_api.get(&victim).await?.uid();
    pods_api.delete(&victim, &DeleteParams::default()).await?;
    let t = Instant::now();
    wait_for(&format!("{victim} to come back Ready"), Duration::from_secs(120), || async {
        let p = pods_api.get_opt(&victim).await?;
        Ok(p.filter(|p| p.uid() != old_uid && pod_ready(p)).map(drop))
    })
    .await?;
    let admin = brokers.admin(&victim).await?;
    wait_for(&format!("every object back on {victim}"), Duration::from_secs(60), || async {
        let back = admin.rule("echo").await?.is_some()
            && admin.bridge("uplink").await?.is_some()
            && admin.traffic_rule("one-sensor").await?.is_some();
        Ok(back.then_some(()))
    })
    .await?;
    check_traffic(brokers.ip(&victim).await?, host_ip).await.map_err(|e| format!("{victim} after restart: {e}"))?;
    eprintln!("[e2e]   {victim} killed: back with all its objects after {:.1}s", t.elapsed().as_secs_f64());

    // A rule deleted by hand through the broker's API is restored by the operator's resync.
    let other = format!("{CLUSTER}-1");
    let admin = brokers.admin(&other).await?;
    admin.delete_rule("echo").await?;
    let t = Instant::now();
    wait_for(&format!("rule echo restored on {other}"), Duration::from_secs(150), || async {
        Ok(admin.rule("echo").await?.map(drop))
    })
    .await?;
    eprintln!("[e2e]   hand-deleted rule restored after {:.1}s", t.elapsed().as_secs_f64());

    // With every object in sync, a resync reads every broker and writes nothing.
    let calls = |verb: &'static str| {
        let client = client.clone();
        async move { operator_calls(&client, verb, "/api/v1/rules/{id}").await }
    };
    let (puts, gets) = (calls("PUT").await?, calls("GET").await?);
    wait_for("a resync to read the rules again", managed_resync() + Duration::from_secs(30), || async {
        Ok((calls("GET").await? > gets).then_some(()))
    })
    .await?;
    // Let that pass finish, then compare.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(calls("PUT").await?, puts, "a resync with nothing changed wrote to the brokers");
    eprintln!("[e2e]   resync with nothing changed: {} rule reads, no writes", calls("GET").await? - gets);

    // Deleting the resources removes the objects from every broker, and the resources go.
    delete::<BridgeResource>(&client, "uplink").await?;
    delete::<RuleResource>(&client, "echo").await?;
    delete::<TrafficRuleResource>(&client, "one-sensor").await?;
    for (pod, admin) in brokers.ready_pods(2).await? {
        assert!(admin.bridge("uplink").await?.is_none(), "{pod} still has the bridge");
        assert!(admin.rule("echo").await?.is_none(), "{pod} still has the rule");
        assert!(admin.traffic_rule("one-sensor").await?.is_none(), "{pod} still has the traffic rule");
    }
    eprintln!("[e2e]   deleting the resources cleaned every broker");
    Ok(())
}

fn managed_resync() -> Duration {
    starling_operator::controllers::managed::RESYNC
}

/// The in-cluster operator's count of admin API calls `verb path` (every outcome), from its
/// `/metrics` on its pod IP.
async fn operator_calls(client: &Client, verb: &str, path: &str) -> Res<u64> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), starling_e2e::demo::OPERATOR_NAMESPACE);
    let list = pods.list(&ListParams::default().labels(starling_e2e::demo::OPERATOR_SELECTOR)).await?.items;
    let ip = list.iter().find_map(|p| p.status.as_ref()?.pod_ip.clone()).ok_or("no operator pod with an IP")?;
    starling_e2e::fence::check(&ip)?;
    let text = reqwest::get(format!("http://{ip}:8080/metrics")).await?.error_for_status()?.text().await?;
    let prefix = format!("starling_operator_admin_api_calls_total{{verb=\"{verb}\",path=\"{path}\",");
    Ok(text
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64)
}

/// On one broker: the Rule republishes, the Bridge forwards up to the host's Mosquitto and
/// brings its messages down, and the TrafficRule refuses a second `limited-*` connection.
async fn check_traffic(ip: IpAddr, host_ip: &str) -> Res {
    let host = host_ip.to_string();
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let pod = ip.to_string();
        let tag = format!("{}-{}", std::process::id(), pod.replace('.', "-"));
        let mut local = Session::connect_as(&pod, 1883, &format!("e2e-local-{tag}"), T)?;
        local.subscribe("rout/#", T)?;
        local.subscribe("down/#", T)?;
        local.publish(&format!("rin/{tag}"), "ping", T)?;
        let (topic, payload) = local.next_publish(T)?;
        anyhow::ensure!((topic.as_str(), payload.as_str()) == (format!("rout/rin/{tag}").as_str(), "ping"));

        // The bridge may still be connecting: publish until the remote sees one.
        let mut remote = Session::connect_as(&host, REMOTE_PORT, &format!("e2e-remote-{tag}"), T)?;
        remote.subscribe("k8s/#", T)?;
        let up = format!("up/{tag}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            local.publish(&up, "to the remote", T)?;
            match remote.next_publish(Duration::from_secs(2)) {
                Ok((t, p)) if t == format!("k8s/{up}") && p == "to the remote" => break,
                Ok(other) => anyhow::bail!("the remote got {other:?}"),
                Err(_) if Instant::now() < deadline => continue,
                Err(e) => anyhow::bail!("nothing forwarded to the remote: {e}"),
            }
        }
        let down = format!("down/{tag}");
        remote.publish(&down, "from the remote", T)?;
        let got = local.next_publish(T)?;
        anyhow::ensure!(got == (down.clone(), "from the remote".to_string()), "bridged down: {got:?}");

        let _first = Session::connect_as(&pod, 1883, &format!("limited-a-{tag}"), T)?;
        match Session::connect_as(&pod, 1883, &format!("limited-b-{tag}"), T) {
            Ok(_) => anyhow::bail!("a second limited-* connection was accepted"),
            Err(e) => {
                anyhow::ensure!(format!("{e:#}").contains("refused") || format!("{e:#}").contains("closed"), "{e:#}")
            }
        }
        Ok(())
    })
    .await?
    .map_err(|e| e.into())
}

/// The cluster's admin credentials and pods.
struct Brokers {
    client: Client,
    creds: starling_operator::resources::admin_secret::AdminCredentials,
}

impl Brokers {
    async fn new(client: Client) -> Res<Brokers> {
        let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
        let name = format!("{CLUSTER}-admin");
        let secret =
            wait_for("the admin Secret", Duration::from_secs(60), || async { Ok(secrets.get_opt(&name).await?) })
                .await?;
        let (creds, _) = read_admin_secret(&secret)?;
        Ok(Brokers { client, creds })
    }

    async fn ip(&self, pod: &str) -> Res<IpAddr> {
        let p = Api::<Pod>::namespaced(self.client.clone(), NS).get(pod).await?;
        Ok(p.status.and_then(|s| s.pod_ip).ok_or("pod without IP")?.parse()?)
    }

    async fn admin(&self, pod: &str) -> Res<AdminClient> {
        let addr = SocketAddr::new(self.ip(pod).await?, 8081);
        Ok(AdminClient::new(http_client()?, format!("http://{addr}"), self.creds.clone()))
    }

    /// Exactly `n` pods, all Ready, with an admin client each (sorted by name).
    async fn ready_pods(&self, n: usize) -> Res<Vec<(String, AdminClient)>> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), NS);
        let pods = wait_for(&format!("exactly {n} Ready pods"), Duration::from_secs(120), || async {
            let pods = api.list(&ListParams::default().labels(SELECTOR)).await?.items;
            let live: Vec<&Pod> = pods.iter().filter(|p| p.metadata.deletion_timestamp.is_none()).collect();
            Ok((pods.len() == n && live.iter().all(|p| pod_ready(p))).then_some(pods))
        })
        .await?;
        let mut out = Vec::new();
        for p in pods {
            out.push((p.name_any(), self.admin(&p.name_any()).await?));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }
}

fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

async fn ready_with(clusters: &Api<BrokerCluster>, replicas: i32) -> Res {
    wait_for(&format!("BrokerCluster Ready with {replicas} replicas"), Duration::from_secs(240), || async {
        let bc = clusters.get(CLUSTER).await?;
        let s = bc.status.clone().unwrap_or_default();
        let done = s.phase == Some(Phase::Ready)
            && s.ready_replicas == replicas
            && s.replicas == replicas
            && s.observed_generation == bc.metadata.generation;
        Ok(done.then_some(()))
    })
    .await
}

/// (status, reason, message) of the Ready condition.
fn ready_condition(s: &ManagedStatus) -> Option<(String, String, String)> {
    s.conditions
        .iter()
        .find(|c| c.type_ == CONDITION_READY)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

async fn apply<K: ManagedKind>(client: &Client, object: serde_json::Value) -> Res {
    let obj: K = serde_json::from_value(object)?;
    Api::<K>::namespaced(client.clone(), NS).create(&PostParams::default(), &obj).await?;
    Ok(())
}

/// Waits until the resource is Ready with every node applied.
async fn synced<K: ManagedKind>(client: &Client, name: &str) -> Res {
    let api = Api::<K>::namespaced(client.clone(), NS);
    wait_for(&format!("{name} to be Ready on every node"), Duration::from_secs(90), || async {
        let obj = api.get(name).await?;
        let s = obj.managed_status().cloned().unwrap_or_default();
        let ready = ready_condition(&s).is_some_and(|(st, _, _)| st == "True");
        Ok((ready && s.nodes_applied == s.nodes_total && s.nodes_total > 0).then_some(()))
    })
    .await
}

/// Deletes the resource and waits until it is gone (its finalizer ran).
async fn delete<K: ManagedKind>(client: &Client, name: &str) -> Res {
    let api = Api::<K>::namespaced(client.clone(), NS);
    api.delete(name, &DeleteParams::default()).await?;
    wait_for(&format!("{name} to be deleted"), Duration::from_secs(60), || async {
        Ok(api.get_opt(name).await?.is_none().then_some(()))
    })
    .await
}
