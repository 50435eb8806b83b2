//! The cluster listener: links peers dialled to this node. It checks each peer's protocol
//! version and secret, then takes its routes and delivers what it forwards, acknowledging
//! QoS 1/2 messages once they are durable here.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesOrdered;
use tokio::net::TcpListener;
use tracing::Instrument;

use super::wire::{self, Frame, WireError};
use crate::broker::Broker;

pub(crate) async fn serve(broker: Arc<Broker>, listener: TcpListener, secret: Arc<Vec<u8>>) {
    loop {
        let accepted = tokio::select! {
            _ = broker.shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, addr)) => {
                let broker = broker.clone();
                let secret = secret.clone();
                let span = tracing::info_span!("cluster_inbound", %addr, peer = tracing::field::Empty);
                tokio::spawn(
                    async move {
                        if let Err(e) = connection(&broker, stream, &secret).await {
                            match e {
                                WireError::Refused(reason) => tracing::warn!(reason, "cluster peer refused"),
                                e => tracing::info!(error = %e, "cluster link from peer closed"),
                            }
                        }
                    }
                    .instrument(span),
                );
            }
            Err(e) => {
                tracing::warn!(error = %e, "cluster accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

type AckFuture = Pin<Box<dyn Future<Output = u64> + Send>>;

async fn connection(broker: &Arc<Broker>, stream: tokio::net::TcpStream, secret: &[u8]) -> Result<(), WireError> {
    let cluster = &broker.cluster_links;
    let mut link = wire::framed(stream);
    let peer = tokio::time::timeout(Duration::from_secs(5), wire::accept(&mut link, broker.node_name(), secret))
        .await
        .map_err(|_| WireError::Refused("handshake timed out".into()))??;
    tracing::Span::current().record("peer", peer.as_str());
    tracing::info!("cluster peer linked in");
    let timeout = Duration::from_millis(cluster.config.peer_timeout_ms.max(cluster.config.heartbeat_ms * 2));
    let mut acks: FuturesOrdered<AckFuture> = FuturesOrdered::new();
    loop {
        tokio::select! {
            _ = broker.shutdown.cancelled() => return Ok(()),
            Some(seq) = acks.next(), if !acks.is_empty() => wire::send(&mut link, &Frame::Ack { seq }).await?,
            frame = tokio::time::timeout(timeout, wire::recv(&mut link)) => {
                let frame = frame.map_err(|_| WireError::Refused(format!("no heartbeat for {} ms", timeout.as_millis())))??;
                match frame {
                    Frame::Routes { routes } => {
                        tracing::debug!(routes = routes.len(), "routes from peer");
                        cluster.replace_routes(&peer, routes);
                    }
                    Frame::RouteAdded { tenant, filter } => cluster.add_route(&peer, tenant, filter),
                    Frame::RouteRemoved { tenant, filter } => cluster.remove_route(&peer, tenant, filter),
                    Frame::Forward { seq, held } => {
                        if seq == 0 {
                            broker.deliver_forwarded(*held);
                        } else if !cluster.first_delivery(&peer, seq) {
                            tracing::debug!(seq, "forwarded message seen before; acknowledged again");
                            acks.push_back(Box::pin(async move { seq }));
                        } else {
                            let published = broker.deliver_forwarded(*held);
                            tracing::debug!(seq, matched = published.matched, "forwarded message delivered");
                            let ticket = published.ticket;
                            let b = broker.clone();
                            acks.push_back(Box::pin(async move {
                                if let Some(t) = ticket {
                                    b.store.wait(t).await;
                                }
                                seq
                            }));
                        }
                    }
                                        Frame::Retained { message } => broker.adopt_retained(*message),
                    Frame::Ping => wire::send(&mut link, &Frame::Pong).await?,
                    other => return Err(WireError::Refused(format!("unexpected {other:?} from {peer}"))),
                }
            }
        }
    }
}
