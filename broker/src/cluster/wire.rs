//! The inter-node protocol: length-delimited postcard frames over TCP, a versioned handshake in
//! which both sides prove they hold the cluster secret (HMAC-SHA256 over the other's nonce).

use futures::{SinkExt, StreamExt};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::net::TcpStream;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

/// The protocol version; a peer with another one is refused with a log line saying both.
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest frame: a message of the largest MQTT packet plus its envelope.
const MAX_FRAME: usize = 300 * 1024 * 1024;

/// Everything that crosses a link between two nodes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Frame {
    /// Dialer to acceptor, first: who it is, which protocol, a nonce to prove the secret on.
    Hello {
        version: u32,
        node: String,
        nonce: [u8; 32],
    },
    /// Acceptor's answer: its own nonce and its proof over the dialer's nonce.
    Challenge {
        node: String,
        nonce: [u8; 32],
        proof: Vec<u8>,
    },
    /// Dialer's proof over the acceptor's nonce.
    Proof {
        proof: Vec<u8>,
    },
    /// The acceptor took the dialer in.
    Welcome,
    /// The acceptor refused; the reason is also in its log.
    Refused {
        reason: String,
    },
    /// All of the sender's routes, replacing what the receiver knew of them.
    Routes {
        routes: Vec<(String, String)>,
    },
    RouteAdded {
        tenant: String,
        filter: String,
    },
    RouteRemoved {
        tenant: String,
        filter: String,
    },
    /// A message for the receiver's local subscribers; QoS 1/2 ones are acknowledged with `Ack`
    /// once the receiver has made them durable. A sender's `seq` only grows, across its
    /// restarts too, so the receiver drops what it already delivered (0 for QoS 0).
    Forward {
        seq: u64,
        held: Box<super::Held>,
    },
    Ack {
        seq: u64,
    },
    /// One of the sender's retained messages, sent when the link comes up so a node that was
    /// away or is new has them; the receiver keeps it unless it has a newer one for the topic.
    Retained {
        message: Box<crate::message::Message>,
    },
    Ping,
    Pong,
}

pub type Link = Framed<TcpStream, LengthDelimitedCodec>;

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("undecodable frame: {0}")]
    Decode(#[from] postcard::Error),
    #[error("connection closed")]
    Closed,
    #[error("{0}")]
    Refused(String),
}

pub fn framed(stream: TcpStream) -> Link {
    let _ = stream.set_nodelay(true);
    Framed::new(stream, LengthDelimitedCodec::builder().max_frame_length(MAX_FRAME).new_codec())
}

pub async fn send(link: &mut Link, frame: &Frame) -> Result<(), WireError> {
    let bytes = postcard::to_stdvec(frame)?;
    link.send(bytes::Bytes::from(bytes)).await?;
    Ok(())
}

/// Queues a frame without flushing (flush after a batch).
pub async fn feed(link: &mut Link, frame: &Frame) -> Result<(), WireError> {
    let bytes = postcard::to_stdvec(frame)?;
    link.feed(bytes::Bytes::from(bytes)).await?;
    Ok(())
}

pub async fn recv(link: &mut Link) -> Result<Frame, WireError> {
    match link.next().await {
        Some(Ok(bytes)) => Ok(postcard::from_bytes(&bytes)?),
        Some(Err(e)) => Err(e.into()),
        None => Err(WireError::Closed),
    }
}

pub fn nonce() -> [u8; 32] {
    rand::random()
}

/// The proof that `node`, acting as `role`, holds `secret`: HMAC-SHA256 over the peer's nonce.
pub fn proof(secret: &[u8], role: &str, nonce: &[u8; 32], node: &str) -> Vec<u8> {
    mac(secret, role, nonce, node).finalize().into_bytes().to_vec()
}

/// Checks a proof in constant time.
pub fn verify(secret: &[u8], role: &str, nonce: &[u8; 32], node: &str, proof: &[u8]) -> bool {
    mac(secret, role, nonce, node).verify_slice(proof).is_ok()
}

fn mac(secret: &[u8], role: &str, nonce: &[u8; 32], node: &str) -> Hmac<Sha256> {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
    m.update(role.as_bytes());
    m.update(&[0]);
    m.update(nonce);
    m.update(node.as_bytes());
    m
}

/// Dials `address` and runs the dialer's half of the handshake; returns the link and the
/// acceptor's node name.
pub async fn dial(address: &str, node: &str, secret: &[u8]) -> Result<(Link, String), WireError> {
    let stream = TcpStream::connect(address).await?;
    let mut link = framed(stream);
    let mine = nonce();
    send(&mut link, &Frame::Hello { version: PROTOCOL_VERSION, node: node.to_string(), nonce: mine }).await?;
    let (peer, theirs) = match recv(&mut link).await? {
        Frame::Challenge { node: peer, nonce, proof } => {
            if !verify(secret, "accept", &mine, &peer, &proof) {
                let _ = send(&mut link, &Frame::Refused { reason: "authentication failed".into() }).await;
                return Err(WireError::Refused(format!(
                    "peer {peer} at {address} failed authentication (wrong cluster secret)"
                )));
            }
            (peer, nonce)
        }
        Frame::Refused { reason } => return Err(WireError::Refused(reason)),
        other => return Err(WireError::Refused(format!("unexpected {other:?} in handshake"))),
    };
    send(&mut link, &Frame::Proof { proof: proof(secret, "dial", &theirs, node) }).await?;
    match recv(&mut link).await? {
        Frame::Welcome => Ok((link, peer)),
        Frame::Refused { reason } => Err(WireError::Refused(reason)),
        other => Err(WireError::Refused(format!("unexpected {other:?} in handshake"))),
    }
}

/// Runs the acceptor's half of the handshake on a new connection; returns the dialer's name.
pub async fn accept(link: &mut Link, node: &str, secret: &[u8]) -> Result<String, WireError> {
    let (peer, theirs) = match recv(link).await? {
        Frame::Hello { version, node: peer, nonce } => {
            if version != PROTOCOL_VERSION {
                let reason = format!(
                    "node {peer} speaks cluster protocol version {version}, this node ({node}) speaks {PROTOCOL_VERSION}"
                );
                let _ = send(link, &Frame::Refused { reason: reason.clone() }).await;
                return Err(WireError::Refused(reason));
            }
            (peer, nonce)
        }
        other => return Err(WireError::Refused(format!("expected Hello, got {other:?}"))),
    };
    let mine = nonce();
    let challenge =
        Frame::Challenge { node: node.to_string(), nonce: mine, proof: proof(secret, "accept", &theirs, node) };
    send(link, &challenge).await?;
    match recv(link).await? {
        Frame::Proof { proof } if verify(secret, "dial", &mine, &peer, &proof) => {
            send(link, &Frame::Welcome).await?;
            Ok(peer)
        }
        Frame::Proof { .. } | Frame::Refused { .. } => {
            let reason = format!("node {peer} failed authentication (wrong cluster secret)");
            let _ = send(link, &Frame::Refused { reason: "authentication failed".into() }).await;
            Err(WireError::Refused(reason))
        }
        other => Err(WireError::Refused(format!("expected Proof, got {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proofs_verify_only_with_the_same_secret_role_nonce_and_node() {
        let n = nonce();
        let p = proof(b"secret", "dial", &n, "a");
        assert!(verify(b"secret", "dial", &n, "a", &p));
        assert!(!verify(b"other", "dial", &n, "a", &p));
        assert!(!verify(b"secret", "accept", &n, "a", &p));
        assert!(!verify(b"secret", "dial", &nonce(), "a", &p));
        assert!(!verify(b"secret", "dial", &n, "b", &p));
    }
}
