//! The measurements, run against a broker's address: fan-in and fan-out throughput at QoS 0/1,
//! end-to-end latency at a fixed rate, and resident memory for idle connections.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::AsyncWriteExt;
use tokio::sync::{Barrier, Semaphore};
use tokio::task::JoinSet;

use crate::mqtt::{Client, Packet, Stamp, encode_puback, encode_publish, now_ns, read_stamp};

/// PUBLISH packets written per `write_all` by a publisher running flat out.
const BATCH: u64 = 64;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A throughput scenario: `publishers` each send `per_publisher` messages as fast as the broker
/// takes them to one topic that `subscribers` all subscribe to.
#[derive(Clone, Debug)]
pub struct Throughput {
    pub publishers: usize,
    pub subscribers: usize,
    pub qos: u8,
    pub per_publisher: u64,
    /// QoS 1: PUBLISHes a publisher has in flight (unacknowledged) at most.
    pub window: usize,
    pub payload: usize,
    /// A subscriber that receives nothing for this long counts the rest as lost.
    pub idle: Duration,
    /// Hard limit on the whole run.
    pub timeout: Duration,
}

#[derive(Clone, Debug, Default)]
pub struct ThroughputResult {
    /// Deliveries expected: messages published times subscribers.
    pub expected: u64,
    pub received: u64,
    /// From the start signal to the last delivery.
    pub elapsed: Duration,
    /// A subscriber went idle or the run hit its hard limit before everything arrived.
    pub incomplete: bool,
    /// Deliveries out of each publisher's order: a repeat or a skip of its sequence numbers.
    pub out_of_order: u64,
    /// CPU time the broker used during the run, in seconds (filled in by the caller).
    pub broker_cpu_secs: f64,
}

impl ThroughputResult {
    /// Deliveries per second.
    pub fn rate(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 { self.received as f64 / s } else { 0.0 }
    }

    pub fn lost(&self) -> u64 {
        self.expected.saturating_sub(self.received)
    }
}

struct SubOutcome {
    received: u64,
    last_ns: u64,
    latencies_ns: Vec<u64>,
    out_of_order: u64,
}

/// Checks that each publisher's messages arrive in the order they were sent, once each.
#[derive(Default)]
struct OrderCheck {
    next: Vec<u32>,
}

impl OrderCheck {
    /// `false` when `seq` is not the next one expected from `publisher`.
    fn in_order(&mut self, publisher: u32, seq: u32) -> bool {
        let i = publisher as usize;
        if i >= self.next.len() {
            if i >= 1 << 16 {
                return false;
            }
            self.next.resize(i + 1, 0);
        }
        let ok = self.next[i] == seq;
        self.next[i] = self.next[i].max(seq.wrapping_add(1));
        ok
    }
}

/// Reads deliveries until `expected` arrived or nothing came for `idle`; acknowledges QoS 1.
/// Records end-to-end latency of messages with a sequence number of at least `record_from`.
async fn subscriber(mut c: Client, expected: u64, idle: Duration, record_from: Option<u32>) -> Result<SubOutcome> {
    let mut out = SubOutcome { received: 0, last_ns: 0, latencies_ns: Vec::new(), out_of_order: 0 };
    let mut order = OrderCheck::default();
    let mut acks = Vec::with_capacity(64 * 1024);
    while out.received < expected {
        let read = c.reader.read_packets(|p| {
            if let Packet::Publish { qos, packet_id, payload, .. } = p {
                out.received += 1;
                if qos > 0 {
                    encode_puback(&mut acks, packet_id);
                }
                let Some(Stamp { sent_ns, publisher, seq }) = read_stamp(payload) else {
                    out.out_of_order += 1;
                    return Ok(());
                };
                if !order.in_order(publisher, seq) {
                    out.out_of_order += 1;
                }
                if record_from.is_some_and(|from| seq >= from) {
                    out.latencies_ns.push(now_ns().saturating_sub(sent_ns));
                }
            }
            Ok(())
        });
        match tokio::time::timeout(idle, read).await {
            Err(_) => break,
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => bail!("the broker closed a subscriber's connection"),
            Ok(Err(e)) => return Err(e),
        }
        out.last_ns = now_ns();
        if !acks.is_empty() {
            c.writer.write_all(&acks).await?;
            acks.clear();
        }
    }
    c.disconnect().await;
    Ok(out)
}

/// What one publisher sends.
#[derive(Clone, Debug)]
struct PubPlan {
    id: u32,
    topic: Arc<str>,
    qos: u8,
    count: u64,
    window: usize,
    payload: usize,
    /// Messages per second, one at a time; `None` for flat out in batches.
    rate: Option<f64>,
}

/// Sends `count` messages; at QoS 1 keeps at most `window` unacknowledged and waits for every
/// PUBACK. With `rate`, sends one message per 1/rate seconds instead of flat out.
async fn publisher(c: Client, plan: PubPlan) -> Result<()> {
    let PubPlan { id, topic, qos, count, window, payload, rate } = plan;
    let Client { mut reader, mut writer } = c;
    let permits = Arc::new(Semaphore::new(if qos > 0 { window } else { Semaphore::MAX_PERMITS }));
    let acker = (qos > 0).then(|| {
        let permits = permits.clone();
        tokio::spawn(async move {
            let mut acked = 0u64;
            while acked < count {
                let mut n = 0;
                let open = reader
                    .read_packets(|p| {
                        if let Packet::PubAck { .. } = p {
                            n += 1;
                        }
                        Ok(())
                    })
                    .await?;
                if !open {
                    bail!("the broker closed a publisher's connection after {acked} PUBACKs");
                }
                acked += n;
                permits.add_permits(n as usize);
            }
            anyhow::Ok(reader)
        })
    });
    let mut tick = rate.map(|r| tokio::time::interval(Duration::from_secs_f64(1.0 / r)));
    let max_batch = if rate.is_some() { 1 } else { BATCH };
    let mut buf = Vec::with_capacity(BATCH as usize * (payload + topic.len() + 8));
    let mut seq = 0u64;
    while seq < count {
        if let Some(t) = tick.as_mut() {
            t.tick().await;
        }
        let n = if qos > 0 {
            permits.acquire().await?.forget();
            let mut n = 1;
            while n < max_batch && seq + n < count {
                match permits.try_acquire() {
                    Ok(p) => p.forget(),
                    Err(_) => break,
                }
                n += 1;
            }
            n
        } else {
            max_batch.min(count - seq)
        };
        buf.clear();
        let sent_ns = now_ns();
        for _ in 0..n {
            let packet_id = (seq % 65535) as u16 + 1;
            encode_publish(
                &mut buf,
                &topic,
                qos,
                packet_id,
                payload,
                Stamp { sent_ns, publisher: id, seq: seq as u32 },
            );
            seq += 1;
        }
        writer.write_all(&buf).await?;
    }
    if let Some(a) = acker {
        a.await.context("publisher's PUBACK reader")??;
    }
    let mut bye = Vec::new();
    crate::mqtt::encode_disconnect(&mut bye);
    let _ = writer.write_all(&bye).await;
    Ok(())
}

async fn connect_subscribers(addr: SocketAddr, n: usize, topic: &str, qos: u8, tag: &str) -> Result<Vec<Client>> {
    let mut subs = Vec::with_capacity(n);
    for i in 0..n {
        let mut c = Client::connect(addr, &format!("bench-{tag}-sub-{i}"), 600, CONNECT_TIMEOUT).await?;
        tokio::time::timeout(CONNECT_TIMEOUT, c.subscribe(topic, qos))
            .await
            .with_context(|| format!("no SUBACK within {CONNECT_TIMEOUT:?}"))??;
        subs.push(c);
    }
    Ok(subs)
}

/// Runs a throughput scenario once.
pub async fn throughput(addr: SocketAddr, s: &Throughput) -> Result<ThroughputResult> {
    let topic: Arc<str> = Arc::from(format!("bench/{}to{}/q{}", s.publishers, s.subscribers, s.qos));
    let subs = connect_subscribers(addr, s.subscribers, &topic, s.qos, "tp").await?;
    let mut pubs = Vec::with_capacity(s.publishers);
    for i in 0..s.publishers {
        pubs.push(Client::connect(addr, &format!("bench-tp-pub-{i}"), 600, CONNECT_TIMEOUT).await?);
    }
    let per_sub = s.per_publisher * s.publishers as u64;
    let expected = per_sub * s.subscribers as u64;
    let start = Arc::new(Barrier::new(s.publishers + 1));
    let mut sub_tasks = JoinSet::new();
    for c in subs {
        sub_tasks.spawn(subscriber(c, per_sub, s.idle, None));
    }
    let mut pub_tasks = JoinSet::new();
    for (i, c) in pubs.into_iter().enumerate() {
        let start = start.clone();
        let plan = PubPlan {
            id: i as u32,
            topic: topic.clone(),
            qos: s.qos,
            count: s.per_publisher,
            window: s.window,
            payload: s.payload,
            rate: None,
        };
        pub_tasks.spawn(async move {
            start.wait().await;
            publisher(c, plan).await
        });
    }
    let t0 = now_ns();
    start.wait().await;
    let mut result = ThroughputResult { expected, ..Default::default() };
    let mut last_ns = t0;
    let collected = tokio::time::timeout(s.timeout, async {
        while let Some(r) = sub_tasks.join_next().await {
            let o = r.context("subscriber task")??;
            result.received += o.received;
            result.out_of_order += o.out_of_order;
            last_ns = last_ns.max(o.last_ns);
        }
        while let Some(r) = pub_tasks.join_next().await {
            r.context("publisher task")??;
        }
        anyhow::Ok(())
    })
    .await;
    match collected {
        Ok(r) => r?,
        Err(_) => {
            // Hard limit: what arrived so far counts; the tasks are aborted when the sets drop.
            result.incomplete = true;
            last_ns = now_ns();
        }
    }
    result.incomplete |= result.received < expected;
    result.elapsed = Duration::from_nanos(last_ns.saturating_sub(t0));
    Ok(result)
}

#[derive(Clone, Debug)]
pub struct Latency {
    /// Messages per second, sent one at a time on a fixed schedule.
    pub rate: f64,
    /// Measured messages; `warmup` more are sent first and not counted.
    pub count: u64,
    pub warmup: u64,
    pub payload: usize,
    pub timeout: Duration,
}

/// What a latency run measured.
#[derive(Clone, Debug, Default)]
pub struct LatencyResult {
    /// Publisher's send time to the subscriber's read, in nanoseconds, warm-up excluded.
    pub latencies_ns: Vec<u64>,
    pub lost: u64,
    pub out_of_order: u64,
}

/// One publisher at a fixed rate, QoS 1 both ways, to one subscriber.
pub async fn latency(addr: SocketAddr, l: &Latency) -> Result<LatencyResult> {
    let topic: Arc<str> = Arc::from("bench/latency");
    let total = l.count + l.warmup;
    let warmup = u32::try_from(l.warmup).context("warmup too large")?;
    let idle = Duration::from_secs(5);
    // The subscriber gets a thread and runtime of its own, as a separate client would: its reads
    // never wait behind the publisher's work in the load generator.
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<Result<()>>();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<Result<SubOutcome>>();
    let sub_topic = topic.clone();
    std::thread::Builder::new().name("bench-latency-sub".into()).spawn(move || {
        let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                let _ = ready_tx.send(Err(e.into()));
                return;
            }
        };
        rt.block_on(async move {
            let sub = match connect_subscribers(addr, 1, &sub_topic, 1, "lat").await {
                Ok(mut v) => v.pop().context("no subscriber"),
                Err(e) => Err(e),
            };
            match sub {
                Ok(sub) => {
                    let _ = ready_tx.send(Ok(()));
                    let _ = done_tx.send(subscriber(sub, total, idle, Some(warmup)).await);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            }
        });
    })?;
    let run = async {
        ready_rx.await.context("latency subscriber thread")??;
        let publ = Client::connect(addr, "bench-lat-pub", 600, CONNECT_TIMEOUT).await?;
        let plan = PubPlan {
            id: 0,
            topic: topic.clone(),
            qos: 1,
            count: total,
            window: 1000,
            payload: l.payload,
            rate: Some(l.rate),
        };
        publisher(publ, plan).await?;
        let o = done_rx.await.context("latency subscriber thread")??;
        anyhow::Ok(LatencyResult {
            lost: total.saturating_sub(o.received),
            latencies_ns: o.latencies_ns,
            out_of_order: o.out_of_order,
        })
    };
    tokio::time::timeout(l.timeout, run).await.context("latency run hit its time limit")?
}

#[derive(Clone, Debug, Default)]
pub struct MemoryResult {
    pub connections: usize,
    pub before_kib: u64,
    pub after_kib: u64,
}

impl MemoryResult {
    pub fn per_connection_kib(&self) -> f64 {
        if self.connections == 0 {
            return 0.0;
        }
        self.after_kib.saturating_sub(self.before_kib) as f64 / self.connections as f64
    }
}

/// Opens `n` MQTT connections (keep-alive 600 s) that then stay idle, and reads the broker's
/// VmRSS before and after through `rss`.
pub async fn idle_memory(
    addr: SocketAddr,
    n: usize,
    concurrency: usize,
    settle: Duration,
    timeout: Duration,
    rss: impl Fn() -> Result<u64>,
) -> Result<MemoryResult> {
    tokio::time::sleep(settle).await;
    let before_kib = rss()?;
    let gate = Arc::new(Semaphore::new(concurrency));
    let mut tasks = JoinSet::new();
    for i in 0..n {
        let gate = gate.clone();
        tasks.spawn(async move {
            let _permit = gate.acquire_owned().await?;
            Client::connect(addr, &format!("bench-idle-{i}"), 600, CONNECT_TIMEOUT).await
        });
    }
    let mut clients = Vec::with_capacity(n);
    let opened = tokio::time::timeout(timeout, async {
        while let Some(r) = tasks.join_next().await {
            clients.push(r.context("connect task")??);
        }
        anyhow::Ok(())
    })
    .await;
    match opened {
        Ok(r) => r?,
        Err(_) => bail!("only {} of {n} idle connections opened within {timeout:?}", clients.len()),
    }
    tokio::time::sleep(settle).await;
    let after_kib = rss()?;
    let result = MemoryResult { connections: clients.len(), before_kib, after_kib };
    // Closing them is not measured; dropping the sockets is enough.
    drop(clients);
    Ok(result)
}

/// Nearest-rank percentile of sorted samples.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&v, 100.0), 100);
        assert_eq!(percentile(&[7], 99.0), 7);
        assert_eq!(percentile(&[], 50.0), 0);
    }

    #[test]
    fn order_check_flags_repeats_and_skips() {
        let mut o = OrderCheck::default();
        assert!(o.in_order(1, 0) && o.in_order(1, 1) && o.in_order(0, 0));
        assert!(!o.in_order(1, 1), "repeat");
        assert!(!o.in_order(1, 5), "skip");
        assert!(o.in_order(1, 6));
    }

    #[test]
    fn rate_and_loss() {
        let r = ThroughputResult {
            expected: 10,
            received: 8,
            elapsed: Duration::from_secs(2),
            incomplete: true,
            out_of_order: 0,
            broker_cpu_secs: 0.0,
        };
        assert_eq!(r.rate(), 4.0);
        assert_eq!(r.lost(), 2);
    }
}
