//! A Pod whose process exits is restarted by the kubelet: the broker started with a config file
//! that does not exist exits with status 1, and the container's restartCount keeps increasing.

use std::time::Duration;

use anyhow::{Result, ensure};
use starling_e2e::wait;

use crate::harness::{Env, in_namespace};
use crate::manifests::{apply, broker_pod_spec, container_status, get_pod, pod};

pub fn pod_whose_process_exits_is_restarted_by_the_kubelet(env: &Env) -> Result<()> {
    in_namespace(env, "e2e-restart", |ns| {
        let k = &env.kubectl;
        let spec = broker_pod_spec(&env.image, &["--config=/nonexistent/broker.toml"], false);
        apply(k, vec![pod(ns, "exits", spec)])?;

        let restarts = |at_least: u64| -> Result<Option<u64>> {
            let pod = get_pod(k, ns, "exits")?;
            let n = container_status(&pod)?["restartCount"].as_u64().unwrap_or(0);
            Ok((n >= at_least).then_some(n))
        };
        let first = wait::until(Duration::from_secs(90), "a first restart of pod exits", || restarts(1))?;
        let pod = get_pod(k, ns, "exits")?;
        let last = &container_status(&pod)?["lastState"]["terminated"];
        ensure!(last["exitCode"] == 1, "expected the broker to have exited with status 1, last state: {last}");
        eprintln!("[e2e]   restartCount {first}, last exit: {} ({})", last["exitCode"], last["reason"]);

        // CrashLoopBackOff waits 10 s, then 20 s, ... before the next start.
        let later =
            wait::until(Duration::from_secs(120), format!("restartCount above {first}"), || restarts(first + 1))?;
        eprintln!("[e2e]   restartCount rose to {later}");

        // Every start fails the same way; a restart may replace the container whose log is
        // asked for (the kubelet keeps one dead container), so ask again on a miss.
        // The current container, if it has already failed too, says the same.
        wait::until_true(Duration::from_secs(60), "the broker's log to say why it exited", || {
            let mut seen = String::new();
            for args in [&["-n", ns, "logs", "exits", "--previous"][..], &["-n", ns, "logs", "exits"][..]] {
                let log = k.cmd(args.iter().copied()).finish()?;
                if log.stdout.contains("does not exist") {
                    return Ok(Ok(()));
                }
                seen.push_str(&format!("{}{}", log.stdout, log.stderr));
            }
            Ok(Err(seen))
        })
    })
}
