//! Running a node: start the listeners and the background tasks (`$SYS`, expiry), wait for the
//! shutdown signal, then stop accepting, disconnect clients (v5: 0x8B) and flush the store.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::task::TaskTracker;

use crate::admin::{self, AppState};
use crate::broker::{Broker, BrokerError};
use crate::mqtt::listener::{self, Bound};

/// A running node.
pub struct Server {
    pub broker: Arc<Broker>,
    pub bound: Bound,
    tracker: TaskTracker,
}

impl Server {
    pub async fn start(broker: Arc<Broker>) -> Result<Server, BrokerError> {
        let tracker = TaskTracker::new();
        let admin = if broker.config.admin.enabled {
            let state = AppState::new(broker.clone()).map_err(|e| BrokerError::Listener(e.to_string()))?;
            crate::admin::settings::load_persisted(&broker, &state.settings_file);
            let addr = broker.config.admin.bind;
            let l =
                admin::bind(addr).await.map_err(|e| BrokerError::Listener(format!("admin listener on {addr}: {e}")))?;
            tracing::info!(addr = ?l.local_addr().ok(), "management API listening");
            Some((l, Arc::new(state)))
        } else {
            None
        };
        let mut bound = listener::start(&broker, &tracker).await?;
        broker.bridges.restore(&broker);
        broker.rules.restore(&broker);
        broker.traffic.restore(&broker);
        tracker.spawn(crate::rules::RuleEngine::run(broker.clone()));
        crate::cluster::Cluster::start(&broker, &tracker).await.map_err(BrokerError::Cluster)?;
        if let Some((l, state)) = admin {
            bound.admin = l.local_addr().ok();
            tracker.spawn(admin::serve(l, state));
        }
        tracker.spawn(crate::sys::run(broker.clone()));
        let b = broker.clone();
        tracker.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = b.shutdown.cancelled() => return,
                    _ = tick.tick() => b.expire(),
                }
            }
        });
        Ok(Server { broker, bound, tracker })
    }

    /// Graceful stop: no new connections, every client told, then the store committed and closed.
    pub async fn stop(self) {
        tracing::info!("shutting down");
        self.broker.shutdown.cancel();
        self.tracker.close();
        if tokio::time::timeout(Duration::from_secs(10), self.tracker.wait()).await.is_err() {
            tracing::warn!("some connections did not close within 10s");
        }
        let store_broker = self.broker.clone();
        let _ = tokio::task::spawn_blocking(move || store_broker.store.close()).await;
        tracing::info!("stopped");
    }
}
