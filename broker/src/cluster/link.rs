//! The link this node dials to one peer: it redials with backoff, announces this node's routes
//! and sends the messages queued for the peer, resending unacknowledged QoS 1/2 after a break.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use tracing::Instrument;

use super::wire::{self, Frame, Link, WireError};
use super::{Peer, PeerState};
use crate::broker::Broker;
use crate::message::now_ms;
use crate::router::RouteChange;

/// Frames sent per wake-up before the link looks at acks and heartbeats again.
const BATCH: usize = 256;

pub(crate) async fn run(broker: Arc<Broker>, peer: Arc<Peer>, secret: Arc<Vec<u8>>) {
    let span = tracing::info_span!("cluster_link", peer = %peer.name, address = %peer.address);
    async move {
        let mut backoff = Duration::from_millis(100);
        loop {
            let dialled = tokio::select! {
                _ = peer.stop.cancelled() => return,
                r = tokio::time::timeout(Duration::from_secs(5), wire::dial(&peer.address, broker.node_name(), &secret)) => r,
            };
            let error = match dialled {
                Ok(Ok((link, name))) if name == peer.name => {
                    backoff = Duration::from_millis(100);
                    match serve(&broker, &peer, link).await {
                        Ok(()) => return,
                        Err(e) => e.to_string(),
                    }
                }
                Ok(Ok((_, name))) => format!("{} answers as node {name}, not {}", peer.address, peer.name),
                Ok(Err(e)) => e.to_string(),
                Err(_) => "handshake timed out".to_string(),
            };
            set_down(&peer, &error);
            tokio::select! {
                _ = peer.stop.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }
    .instrument(span)
    .await
}

fn set_down(peer: &Peer, error: &str) {
    let mut st = peer.state.lock();
    if st.up || st.last_error.as_deref() != Some(error) {
        tracing::warn!(error, "cluster peer down");
    }
    if st.up {
        st.up = false;
        st.since_ms = now_ms();
    }
    st.last_error = Some(error.to_string());
    // QoS 0 is not held for a peer that is down.
    let lost = st.fresh.len() as u64;
    st.dropped += lost;
    st.fresh.clear();
    st.sent = 0;
}

/// Runs an established link until it breaks (`Err`) or the peer is removed (`Ok`).
async fn serve(broker: &Arc<Broker>, peer: &Peer, mut link: Link) -> Result<(), WireError> {
    let cluster = &broker.cluster_links;
    let mut changes = broker.router.route_changes();
    let routes = broker.router.local_routes();
    wire::send(&mut link, &Frame::Routes { routes }).await?;
    for message in broker.retained.everything() {
        wire::feed(&mut link, &Frame::Retained { message: Box::new((*message).clone()) }).await?;
    }
    futures::SinkExt::<bytes::Bytes>::flush(&mut link).await?;
    {
        let mut st = peer.state.lock();
        st.up = true;
        st.since_ms = now_ms();
        st.last_error = None;
        st.sent = 0;
    }
    tracing::info!("cluster peer up");
    let heartbeat = Duration::from_millis(cluster.config.heartbeat_ms.max(10));
    let timeout = Duration::from_millis(cluster.config.peer_timeout_ms.max(cluster.config.heartbeat_ms * 2));
    let mut ping = tokio::time::interval(heartbeat);
    let mut last_heard = tokio::time::Instant::now();
    loop {
        let batch = next_batch(&mut peer.state.lock());
        let sent_some = !batch.is_empty();
        for f in &batch {
            wire::feed(&mut link, f).await?;
        }
        if sent_some {
            futures::SinkExt::<bytes::Bytes>::flush(&mut link).await?;
        }
        // Between batches the acceptor's acks and pongs are read first (`biased`), so a long
        // stream never leaves them unread with both sides blocked on writes.
        tokio::select! {
            biased;
            _ = peer.stop.cancelled() => return Ok(()),
            change = changes.recv() => {
                let frame = match change {
                    Ok(RouteChange::Added { tenant, filter }) => Frame::RouteAdded { tenant, filter },
                    Ok(RouteChange::Removed { tenant, filter }) => Frame::RouteRemoved { tenant, filter },
                    Err(RecvError::Lagged(_)) => Frame::Routes { routes: broker.router.local_routes() },
                    Err(RecvError::Closed) => return Ok(()),
                };
                wire::send(&mut link, &frame).await?;
            }
            frame = wire::recv(&mut link) => {
                last_heard = tokio::time::Instant::now();
                match frame? {
                    Frame::Ack { seq } => {
                        for done in acked(&mut peer.state.lock(), seq) {
                            broker.store.delete_outbox(&peer.name, done);
                        }
                    }
                    Frame::Pong => {}
                    other => return Err(WireError::Refused(format!("unexpected {other:?} from the acceptor"))),
                }
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > timeout {
                    return Err(WireError::Refused(format!("no heartbeat answer for {} ms", timeout.as_millis())));
                }
                                wire::send(&mut link, &Frame::Ping).await?;
            }
            _ = peer.wake.notified() => {}
            _ = std::future::ready(()), if sent_some => {}
        }
    }
}

/// Takes what is due on the link: fresh QoS 0 messages, then QoS 1/2 ones not yet sent on it.
fn next_batch(st: &mut PeerState) -> Vec<Frame> {
    let mut out = Vec::new();
    while out.len() < BATCH
        && let Some(m) = st.fresh.pop_front()
    {
        st.forwarded += 1;
        out.push(Frame::Forward { seq: 0, held: Box::new((*m).clone()) });
    }
    while out.len() < BATCH && st.sent < st.unacked.len() {
        let (seq, m) = &st.unacked[st.sent];
        out.push(Frame::Forward { seq: *seq, held: Box::new((**m).clone()) });
        st.sent += 1;
        st.forwarded += 1;
    }
    out
}

/// The peer acknowledges in order: everything up to `seq` is delivered there. Returns the
/// sequences no longer held.
fn acked(st: &mut PeerState, seq: u64) -> Vec<u64> {
    let mut done = Vec::new();
    while let Some(&(s, _)) = st.unacked.front().filter(|(s, _)| *s <= seq) {
        done.push(s);
        st.unacked.pop_front();
        st.sent = st.sent.saturating_sub(1);
    }
    done
}
