//! A minimal MQTT 3.1.1 client for load generation: hand-rolled framing for CONNECT, SUBSCRIBE,
//! PUBLISH at QoS 0/1 and PUBACK, plus the shared clock and the payload that carries send times.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// Bytes at the start of every payload: send time (u64), publisher (u32), sequence number (u32).
pub const PAYLOAD_HEADER: usize = 16;

static ORIGIN: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds since the process-wide monotonic origin; publishers and subscribers share it.
pub fn now_ns() -> u64 {
    ORIGIN.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

fn put_len(buf: &mut Vec<u8>, mut len: usize) {
    loop {
        let mut b = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            b |= 0x80;
        }
        buf.push(b);
        if len == 0 {
            break;
        }
    }
}

fn put_str(buf: &mut Vec<u8>, s: &[u8]) {
    buf.extend_from_slice(&(s.len() as u16).to_be_bytes());
    buf.extend_from_slice(s);
}

/// CONNECT with clean session, no will, no credentials.
pub fn encode_connect(buf: &mut Vec<u8>, client_id: &str, keep_alive: u16) {
    buf.push(0x10);
    put_len(buf, 10 + 2 + client_id.len());
    put_str(buf, b"MQTT");
    buf.push(4); // protocol level 3.1.1
    buf.push(0x02); // clean session
    buf.extend_from_slice(&keep_alive.to_be_bytes());
    put_str(buf, client_id.as_bytes());
}

pub fn encode_subscribe(buf: &mut Vec<u8>, packet_id: u16, filter: &str, qos: u8) {
    buf.push(0x82);
    put_len(buf, 2 + 2 + filter.len() + 1);
    buf.extend_from_slice(&packet_id.to_be_bytes());
    put_str(buf, filter.as_bytes());
    buf.push(qos);
}

/// A PUBLISH whose payload is the 16-byte header (send time, publisher, sequence) padded with
/// zeros to `payload_len` bytes.
pub fn encode_publish(buf: &mut Vec<u8>, topic: &str, qos: u8, packet_id: u16, payload_len: usize, stamp: Stamp) {
    let payload_len = payload_len.max(PAYLOAD_HEADER);
    buf.push(0x30 | (qos << 1));
    put_len(buf, 2 + topic.len() + if qos > 0 { 2 } else { 0 } + payload_len);
    put_str(buf, topic.as_bytes());
    if qos > 0 {
        buf.extend_from_slice(&packet_id.to_be_bytes());
    }
    buf.extend_from_slice(&stamp.sent_ns.to_be_bytes());
    buf.extend_from_slice(&stamp.publisher.to_be_bytes());
    buf.extend_from_slice(&stamp.seq.to_be_bytes());
    buf.resize(buf.len() + payload_len - PAYLOAD_HEADER, 0);
}

pub fn encode_puback(buf: &mut Vec<u8>, packet_id: u16) {
    let id = packet_id.to_be_bytes();
    buf.extend_from_slice(&[0x40, 0x02, id[0], id[1]]);
}

pub fn encode_disconnect(buf: &mut Vec<u8>) {
    buf.extend_from_slice(&[0xE0, 0x00]);
}

/// The fields of the payload header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub sent_ns: u64,
    pub publisher: u32,
    pub seq: u32,
}

pub fn read_stamp(payload: &[u8]) -> Option<Stamp> {
    let sent_ns = u64::from_be_bytes(payload.get(0..8)?.try_into().ok()?);
    let publisher = u32::from_be_bytes(payload.get(8..12)?.try_into().ok()?);
    let seq = u32::from_be_bytes(payload.get(12..16)?.try_into().ok()?);
    Some(Stamp { sent_ns, publisher, seq })
}

/// A packet from the broker, borrowing from the read buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Packet<'a> {
    ConnAck { return_code: u8 },
    SubAck { packet_id: u16, codes: &'a [u8] },
    Publish { qos: u8, packet_id: u16, topic: &'a [u8], payload: &'a [u8] },
    PubAck { packet_id: u16 },
    Other { kind: u8 },
}

fn be16(b: &[u8], at: usize) -> Result<u16> {
    let s = b.get(at..at + 2).context("packet too short")?;
    Ok(u16::from_be_bytes([s[0], s[1]]))
}

/// Splits one packet off the front of `buf`: `Ok(None)` while more bytes are needed.
pub fn parse(buf: &[u8]) -> Result<Option<(Packet<'_>, usize)>> {
    let mut len = 0usize;
    let mut i = 1;
    loop {
        let Some(&b) = buf.get(i) else { return Ok(None) };
        if i > 4 {
            bail!("malformed remaining length");
        }
        len |= usize::from(b & 0x7f) << (7 * (i - 1));
        i += 1;
        if b & 0x80 == 0 {
            break;
        }
    }
    let total = i + len;
    if buf.len() < total {
        return Ok(None);
    }
    let header = buf[0];
    let body = &buf[i..total];
    let p = match header >> 4 {
        2 => Packet::ConnAck { return_code: *body.get(1).context("short CONNACK")? },
        3 => {
            let qos = (header >> 1) & 3;
            let tlen = usize::from(be16(body, 0)?);
            let topic = body.get(2..2 + tlen).context("short PUBLISH topic")?;
            let mut at = 2 + tlen;
            let mut packet_id = 0;
            if qos > 0 {
                packet_id = be16(body, at)?;
                at += 2;
            }
            Packet::Publish { qos, packet_id, topic, payload: body.get(at..).context("short PUBLISH")? }
        }
        4 => Packet::PubAck { packet_id: be16(body, 0)? },
        9 => Packet::SubAck { packet_id: be16(body, 0)?, codes: &body[2..] },
        kind => Packet::Other { kind },
    };
    Ok(Some((p, total)))
}

/// The read side of a connection with its buffer.
pub struct Reader {
    half: OwnedReadHalf,
    buf: BytesMut,
}

impl Reader {
    /// Reads once and hands every complete packet to `f`; `false` when the broker closed.
    pub async fn read_packets(&mut self, mut f: impl FnMut(Packet<'_>) -> Result<()>) -> Result<bool> {
        if self.buf.capacity() - self.buf.len() < 16 * 1024 {
            self.buf.reserve(64 * 1024);
        }
        if self.half.read_buf(&mut self.buf).await? == 0 {
            return Ok(false);
        }
        let mut used = 0;
        while let Some((p, n)) = parse(&self.buf[used..])? {
            f(p)?;
            used += n;
        }
        self.buf.advance(used);
        Ok(true)
    }

    /// Reads until `want` picks a packet, ignoring the ones it returns `None` for.
    async fn wait_for<T>(&mut self, mut want: impl FnMut(Packet<'_>) -> Option<T>) -> Result<T> {
        let mut got = None;
        while got.is_none() {
            let open = self
                .read_packets(|p| {
                    if got.is_none() {
                        got = want(p);
                    }
                    Ok(())
                })
                .await?;
            if !open && got.is_none() {
                bail!("the broker closed the connection");
            }
        }
        got.context("unreachable: loop ends with a packet")
    }
}

/// A connected MQTT 3.1.1 client, split into its read and write halves.
pub struct Client {
    pub reader: Reader,
    pub writer: OwnedWriteHalf,
}

impl Client {
    /// TCP connect (TCP_NODELAY, as both brokers set on their side), CONNECT, wait for CONNACK.
    pub async fn connect(addr: SocketAddr, client_id: &str, keep_alive: u16, timeout: Duration) -> Result<Client> {
        tokio::time::timeout(timeout, Self::connect_inner(addr, client_id, keep_alive))
            .await
            .with_context(|| format!("{client_id}: no CONNACK from {addr} within {timeout:?}"))?
    }

    async fn connect_inner(addr: SocketAddr, client_id: &str, keep_alive: u16) -> Result<Client> {
        let stream = TcpStream::connect(addr).await.with_context(|| format!("{client_id}: connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        let (r, mut w) = stream.into_split();
        let mut buf = Vec::with_capacity(64);
        encode_connect(&mut buf, client_id, keep_alive);
        w.write_all(&buf).await?;
        let mut reader = Reader { half: r, buf: BytesMut::with_capacity(1024) };
        let rc = reader
            .wait_for(|p| match p {
                Packet::ConnAck { return_code } => Some(return_code),
                _ => None,
            })
            .await
            .with_context(|| format!("{client_id}: waiting for CONNACK"))?;
        if rc != 0 {
            bail!("{client_id}: CONNACK return code {rc}");
        }
        Ok(Client { reader, writer: w })
    }

    /// SUBSCRIBE to one filter and wait for its SUBACK; fails unless the QoS asked for is granted.
    pub async fn subscribe(&mut self, filter: &str, qos: u8) -> Result<()> {
        let mut buf = Vec::with_capacity(64);
        encode_subscribe(&mut buf, 1, filter, qos);
        self.writer.write_all(&buf).await?;
        let granted = self
            .reader
            .wait_for(|p| match p {
                Packet::SubAck { packet_id: 1, codes } => Some(codes.first().copied()),
                _ => None,
            })
            .await?;
        match granted {
            Some(g) if g == qos => Ok(()),
            other => bail!("SUBSCRIBE {filter} at QoS {qos}: granted {other:?}"),
        }
    }

    /// Sends DISCONNECT and closes; errors are ignored (the broker may be gone already).
    pub async fn disconnect(mut self) {
        let mut buf = Vec::with_capacity(2);
        encode_disconnect(&mut buf);
        let _ = self.writer.write_all(&buf).await;
        let _ = self.writer.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_round_trips_through_the_parser() {
        let mut buf = Vec::new();
        encode_publish(&mut buf, "a/b", 1, 7, 200, Stamp { sent_ns: 123_456_789, publisher: 3, seq: 42 });
        encode_puback(&mut buf, 9);
        let (p, n) = parse(&buf).unwrap().unwrap();
        let Packet::Publish { qos, packet_id, topic, payload } = p else { panic!("not a PUBLISH: {p:?}") };
        assert_eq!((qos, packet_id, topic, payload.len()), (1, 7, &b"a/b"[..], 200));
        assert_eq!(read_stamp(payload), Some(Stamp { sent_ns: 123_456_789, publisher: 3, seq: 42 }));
        // 200-byte payload needs a two-byte remaining length.
        assert_eq!(n, 1 + 2 + 2 + 3 + 2 + 200);
        assert_eq!(parse(&buf[n..]).unwrap(), Some((Packet::PubAck { packet_id: 9 }, 4)));
    }

    #[test]
    fn incomplete_packets_wait_for_more_bytes() {
        let mut buf = Vec::new();
        encode_publish(&mut buf, "t", 0, 0, 16, Stamp { sent_ns: 1, publisher: 2, seq: 3 });
        for cut in 0..buf.len() {
            assert_eq!(parse(&buf[..cut]).unwrap(), None, "cut at {cut}");
        }
        assert!(parse(&buf).unwrap().is_some());
    }

    #[test]
    fn connect_and_subscribe_have_the_3_1_1_layout() {
        let mut buf = Vec::new();
        encode_connect(&mut buf, "c1", 60);
        assert_eq!(buf, [0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, 2, b'c', b'1']);
        buf.clear();
        encode_subscribe(&mut buf, 1, "x", 1);
        assert_eq!(buf, [0x82, 6, 0, 1, 0, 1, b'x', 1]);
    }

    #[test]
    fn oversized_remaining_length_is_an_error() {
        assert!(parse(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01]).is_err());
    }
}
