//! Starling's end-to-end suite, one test binary: brings the local cluster up once (or uses
//! `STARLING_E2E_KUBECONFIG`), runs the cases in order, and always tears down.

// `cargo test -p e2e` (as root) runs it against a fresh local cluster; `e2e/kind.sh` runs the
// same cases against kind. Variables: `STARLING_E2E_KUBECONFIG` (use that cluster; the broker
// and operator images must be loaded and pod/Service IPs routable from here),
// `STARLING_E2E_KUBECTL`, `STARLING_E2E_HELM`, `STARLING_E2E_HOST_IP` (this host as the pods
// see it, where the Bridge case's Mosquitto listens), `STARLING_E2E_IMAGE` (default
// `starling/broker:dev`), `STARLING_E2E_BROKER_BIN`, `STARLING_E2E_OPERATOR_BIN`,
// `STARLING_E2E_SKIP_INSTALL`.
// The operator case runs the operator in this process and cleans up before the chart case
// installs it in-cluster (watching every namespace): the two never run at once.
// libtest's usual arguments work (`cargo test -p e2e -- statefulset`, `--list`); the cases
// always run one at a time, in the order below, with `down` last.

mod chart;
mod delete;
mod demo;
mod deployment;
mod down;
mod harness;
mod logs;
mod managed;
mod manifests;
mod operator;
mod restart;
mod statefulset;

use std::process::ExitCode;
use std::time::Instant;

use anyhow::Result;
use libtest_mimic::{Arguments, Completion, Failed, Trial};

use harness::Env;

fn main() -> ExitCode {
    let mut args = Arguments::from_args();
    // The cases share one cluster and `down` must come last: one at a time, in order.
    args.test_threads = Some(1);
    let _teardown = harness::TeardownGuard;
    let cases = vec![
        case(
            "deployment_becomes_ready_and_answers_mqtt_on_pod_ips_and_cluster_ip",
            deployment::deployment_becomes_ready_and_answers_mqtt_on_pod_ips_and_cluster_ip,
        ),
        case(
            "pod_whose_process_exits_is_restarted_by_the_kubelet",
            restart::pod_whose_process_exits_is_restarted_by_the_kubelet,
        ),
        case("deleting_a_pod_stops_its_container", delete::deleting_a_pod_stops_its_container),
        case(
            "statefulset_scales_1_to_3_to_1_and_each_pod_resolves_by_dns_name",
            statefulset::statefulset_scales_1_to_3_to_1_and_each_pod_resolves_by_dns_name,
        ),
        case("kubectl_logs_shows_the_broker_log", logs::kubectl_logs_shows_the_broker_log),
        case(
            "operator_makes_a_broker_cluster_ready_and_hot_reloads_its_settings",
            operator::three_brokers_become_ready_and_hot_reload_settings,
        ),
        case(
            "chart_installs_and_the_operator_pod_runs_and_reaches_the_api_server_in_cluster",
            chart::chart_installs_and_the_operator_pod_runs_and_reaches_the_api_server_in_cluster,
        ),
        case(
            "objects_reach_every_broker_and_follow_scaling_pod_loss_drift_and_deletion",
            managed::objects_reach_every_broker_and_follow_scaling_pod_loss_drift_and_deletion,
        ),
        case(
            "quickstart_becomes_a_ready_three_broker_cluster_that_answers_mqtt",
            demo::quickstart_becomes_a_ready_three_broker_cluster_that_answers_mqtt,
        ),
        Trial::ignorable_test("down_leaves_nothing_behind", || {
            let env = harness::env().map_err(failed)?;
            match timed("down_leaves_nothing_behind", || down::run(env)).map_err(failed)? {
                Some(()) => Ok(Completion::Completed),
                None => Ok(Completion::ignored_with("not a cluster this run brought up")),
            }
        }),
    ];
    let conclusion = libtest_mimic::run(&args, cases);
    drop(_teardown);
    conclusion.exit_code()
}

/// A case that gets the shared cluster, timed; its error (with causes) is the failure message.
fn case(name: &'static str, body: fn(&Env) -> Result<()>) -> Trial {
    Trial::test(name, move || {
        let env = harness::env().map_err(failed)?;
        timed(name, || body(env)).map_err(failed)
    })
}

fn timed<T>(name: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let t = Instant::now();
    eprintln!("[e2e] {name}: start");
    let r = f();
    eprintln!("[e2e] {name}: {} in {:.1}s", if r.is_ok() { "ok" } else { "FAILED" }, t.elapsed().as_secs_f64());
    r
}

fn failed(e: anyhow::Error) -> Failed {
    format!("{e:#}").into()
}
