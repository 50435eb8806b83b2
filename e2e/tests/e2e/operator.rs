//! The operator against the e2e suite's real Kubernetes: a 3-replica BrokerCluster becomes
//! Ready, MQTT flows through every pod, each broker got its membership (with group tags) and
//! settings, and a settings change is hot-reloaded without restarting a pod. The operator runs
//! in this process, leader-elected, in a fresh namespace deleted at the end.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crds::broker_cluster::{BrokerCluster, Phase};
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, ResourceExt};
use serde_json::json;
use starling_operator::admin_client::{AdminClient, http_client};
use starling_operator::controllers::broker_cluster::ImageDefaults;
use starling_operator::operator::{RunConfig, run_with_client};
use starling_operator::resources::admin_secret::read_admin_secret;

use crate::harness::Env;

pub(crate) type Res<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// A kube client for the cluster of `kubeconfig`.
pub(crate) async fn kube_client(kubeconfig: &std::path::Path) -> Res<Client> {
    let config =
        kube::Config::from_custom_kubeconfig(Kubeconfig::read_from(kubeconfig)?, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

/// Polls `probe` every second until it yields a value; fails after `timeout` with its last error.
pub(crate) async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> Res<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Res<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    let mut last = String::from("nothing yet");
    loop {
        match probe().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = e.to_string(),
        }
        if Instant::now() > deadline {
            return Err(format!("timed out after {timeout:?} waiting for {what} (last error: {last})").into());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// CONNECT, SUBSCRIBE and a QoS 0 PUBLISH that comes back: MQTT 3.1.1 in raw bytes.
fn mqtt_round_trip(addr: SocketAddr, client_id: &str) -> Res {
    fn string(s: &str) -> Vec<u8> {
        let mut v = (s.len() as u16).to_be_bytes().to_vec();
        v.extend_from_slice(s.as_bytes());
        v
    }
    fn packet(header: u8, body: Vec<u8>) -> Vec<u8> {
        let mut p = vec![header, body.len() as u8];
        p.extend(body);
        p
    }
    fn read_packet(s: &mut TcpStream) -> Res<(u8, Vec<u8>)> {
        let mut head = [0u8; 2];
        s.read_exact(&mut head)?;
        let mut body = vec![0u8; head[1] as usize];
        s.read_exact(&mut body)?;
        Ok((head[0], body))
    }
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut connect = string("MQTT");
    connect.extend([4, 0x02, 0, 60]);
    connect.extend(string(client_id));
    s.write_all(&packet(0x10, connect))?;
    let (t, body) = read_packet(&mut s)?;
    if t != 0x20 || body != [0, 0] {
        return Err(format!("{addr}: CONNACK expected, got {t:#x} {body:?}").into());
    }
    let topic = format!("live/{client_id}");
    let mut subscribe = vec![0, 1];
    subscribe.extend(string(&topic));
    subscribe.push(0);
    s.write_all(&packet(0x82, subscribe))?;
    let (t, body) = read_packet(&mut s)?;
    if t != 0x90 || body != [0, 1, 0] {
        return Err(format!("{addr}: SUBACK expected, got {t:#x} {body:?}").into());
    }
    let mut publish = string(&topic);
    publish.extend_from_slice(b"hello");
    s.write_all(&packet(0x30, publish.clone()))?;
    let (t, body) = read_packet(&mut s)?;
    if t != 0x30 || body != publish {
        return Err(format!("{addr}: the PUBLISH did not come back, got {t:#x} {body:?}").into());
    }
    s.write_all(&[0xe0, 0])?;
    Ok(())
}

/// The e2e case: runs the scenario on the suite's cluster with the suite's broker image.
pub fn three_brokers_become_ready_and_hot_reload_settings(env: &Env) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let kubeconfig = env.kubectl.kubeconfig().to_path_buf();
    let image = env.image.clone();
    runtime.block_on(async move { run(kubeconfig, image).await.map_err(|e| anyhow::anyhow!("{e}")) })
}

async fn run(path: PathBuf, image: String) -> Res {
    let client = kube_client(&path).await?;
    let ns = format!("starling-op-{}", std::process::id());
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces.create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": ns}}))?).await?;

    let result = scenario(client.clone(), &ns, &image).await;

    let _ = namespaces.delete(&ns, &DeleteParams::default()).await;
    result
}

async fn scenario(client: Client, ns: &str, image: &str) -> Res {
    // The CRDs, as the chart installs them.
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in starling_operator::crd::all() {
        let name = crd.name_any();
        crds.patch(&name, &PatchParams::apply("starling-operator-test").force(), &Patch::Apply(crd)).await?;
        wait_for(&format!("the CRD {name} to be established"), Duration::from_secs(30), || {
            let (crds, name) = (crds.clone(), name.clone());
            async move {
                let crd = crds.get(&name).await?;
                let conditions = crd.status.and_then(|s| s.conditions).unwrap_or_default();
                Ok(conditions.iter().any(|c| c.type_ == "Established" && c.status == "True").then_some(()))
            }
        })
        .await?;
    }

    // The operator, in this process, leader-elected, watching the test namespace only.
    let http_addr: SocketAddr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?
    };
    let cfg = RunConfig {
        namespaces: vec![ns.to_string()],
        http_addr,
        leader_election: true,
        lease_name: "starling-operator".into(),
        lease_namespace: ns.to_string(),
        identity: "live-test".into(),
        images: ImageDefaults { repository: "starling/broker".into(), version: "dev".into() },
        concurrency: 2,
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let operator = tokio::spawn(run_with_client(cfg, client.clone(), async move {
        let _ = stop_rx.await;
    }));

    let outcome = cluster_scenario(client.clone(), ns, http_addr, image).await;
    if let Err(e) = &outcome {
        eprintln!("[e2e]   scenario failed: {e}");
    }

    let _ = stop_tx.send(());
    let stopped = tokio::time::timeout(Duration::from_secs(20), operator).await;
    outcome?;
    match stopped {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => return Err(format!("the operator failed: {e}").into()),
        Ok(Err(e)) => return Err(format!("the operator task: {e}").into()),
        Err(_) => return Err("the operator did not stop within 20 s".into()),
    }
    Ok(())
}

async fn cluster_scenario(client: Client, ns: &str, http_addr: SocketAddr, image: &str) -> Res {
    let clusters: Api<BrokerCluster> = Api::namespaced(client.clone(), ns);
    let bc: BrokerCluster = serde_json::from_value(json!({
        "apiVersion": "starling.dev/v1alpha1", "kind": "BrokerCluster",
        "metadata": {"name": "demo"},
        "spec": {
            "replicas": 3,
            "image": image,
            "persistence": {"ephemeral": true},
            "resources": {"requests": {"cpu": "50m", "memory": "32Mi"}, "limits": {"memory": "256Mi"}},
            "settings": {"limits": {"max_inflight": 32}},
            "tags": ["eu"],
            "podTags": {"0": ["gold"]},
        }
    }))?;
    let started = Instant::now();
    clusters.create(&PostParams::default(), &bc).await?;

    let last_said = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let ready = wait_for("the BrokerCluster to be Ready", Duration::from_secs(240), || {
        let clusters = clusters.clone();
        let last_said = last_said.clone();
        async move {
            let bc = clusters.get("demo").await?;
            let status = bc.status.clone().unwrap_or_default();
            let said: Vec<String> = status
                .conditions
                .iter()
                .filter(|c| c.status == "True")
                .map(|c| format!("{} ({}: {})", c.type_, c.reason, c.message))
                .collect();
            let said = format!("{:?} {}", status.phase, said.join(", "));
            let mut last = last_said.lock().map_err(|e| e.to_string())?;
            if *last != said {
                eprintln!("[{:>5.1}s] {said}", started.elapsed().as_secs_f64());
                *last = said;
            }
            Ok((status.phase == Some(Phase::Ready)).then_some(bc))
        }
    })
    .await?;
    eprintln!("Ready after {:?}", started.elapsed());
    let status = ready.status.clone().unwrap_or_default();
    assert_eq!((status.replicas, status.ready_replicas), (3, 3));
    assert_eq!(status.nodes.len(), 3);
    assert!(status.nodes.iter().all(|n| n.ready && n.version.is_some()), "{:?}", status.nodes);
    assert_eq!(status.endpoint.as_deref(), Some(format!("demo.{ns}.svc:1883").as_str()));
    assert_eq!(status.observed_generation, ready.metadata.generation);

    // Each broker: MQTT works, and its API shows the membership and settings the operator set.
    let secret = Api::<Secret>::namespaced(client.clone(), ns).get("demo-admin").await?;
    let (creds, _) = read_admin_secret(&secret)?;
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pods = pods_api.list(&ListParams::default().labels("app.kubernetes.io/instance=demo")).await?.items;
    assert_eq!(pods.len(), 3);
    let mut before = Vec::new();
    for pod in &pods {
        let ip: std::net::IpAddr =
            pod.status.as_ref().and_then(|s| s.pod_ip.clone()).ok_or("pod without IP")?.parse()?;
        let name = pod.name_any();
        let mqtt = SocketAddr::new(ip, 1883);
        tokio::task::spawn_blocking(move || mqtt_round_trip(mqtt, "live")).await??;
        let admin = AdminClient::new(http_client()?, format!("http://{ip}:8081"), creds.clone());
        let m = admin.cluster().await?;
        assert_eq!(m.node, name);
        assert_eq!(m.members.len(), 3, "{m:?}");
        let tags: &[&str] = if name == "demo-0" { &["eu", "gold"] } else { &["eu"] };
        assert_eq!(m.tags, tags, "group tags of {name}");
        assert!(m.members.iter().any(|x| x.address == format!("{name}.demo-headless.{ns}.svc:8081")), "{m:?}");
        assert_eq!(admin.settings().await?.limits.max_inflight, 32);
        before.push((name, pod.uid(), restarts(pod)));
    }

    // A settings change reaches every broker without a restart.
    clusters
        .patch(
            "demo",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"settings": {"limits": {"max_inflight": 16}}}})),
        )
        .await?;
    for pod in &pods {
        let ip = pod.status.as_ref().and_then(|s| s.pod_ip.clone()).ok_or("pod without IP")?;
        let admin = AdminClient::new(http_client()?, format!("http://{ip}:8081"), creds.clone());
        wait_for("the new settings on every broker", Duration::from_secs(60), || {
            let admin = admin.clone();
            async move { Ok((admin.settings().await?.limits.max_inflight == 16).then_some(())) }
        })
        .await?;
    }
    let after = pods_api.list(&ListParams::default().labels("app.kubernetes.io/instance=demo")).await?.items;
    let after: Vec<_> = after.iter().map(|p| (p.name_any(), p.uid(), restarts(p))).collect();
    assert_eq!(before, after, "a settings change must not replace or restart pods");
    wait_for("Ready again with the new generation observed", Duration::from_secs(60), || {
        let clusters = clusters.clone();
        async move {
            let bc = clusters.get("demo").await?;
            let s = bc.status.clone().unwrap_or_default();
            Ok((s.phase == Some(Phase::Ready) && s.observed_generation == bc.metadata.generation).then_some(()))
        }
    })
    .await?;

    // The operator's own endpoints.
    let http = reqwest::Client::new();
    assert_eq!(http.get(format!("http://{http_addr}/readyz")).send().await?.status(), 200);
    let metrics = http.get(format!("http://{http_addr}/metrics")).send().await?.text().await?;
    assert!(metrics.contains("starling_operator_leader 1"), "{metrics}");
    assert!(metrics.contains(r#"starling_operator_reconciles_total{controller="brokercluster",result="ok"}"#));
    assert!(metrics.contains(r#"verb="PUT",path="/api/v1/config",outcome="ok"}"#), "{metrics}");
    Ok(())
}

pub(crate) fn restarts(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|cs| cs.iter().map(|c| c.restart_count).sum())
        .unwrap_or(0)
}
