//! The embedded store: retained messages and persistent sessions (subscriptions, queued and
//! inflight QoS 1/2 messages) in redb under the data directory, written by one thread that
//! commits whatever has queued up as one transaction (group commit, one fsync per batch).

use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;

use parking_lot::Mutex;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::message::Message;
use crate::router::SubOptions;
use rmqtt_codec::types::QoS;

const RETAINED: TableDefinition<&[u8], &[u8]> = TableDefinition::new("retained");
const SESSIONS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("sessions");
const SESSION_MESSAGES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("session_messages");
/// The packet id a session message was last sent with (same key as in `session_messages`), so
/// that after a restart it is sent again as a duplicate with that id.
const SESSION_INFLIGHT: TableDefinition<&[u8], &[u8]> = TableDefinition::new("session_inflight");
/// QoS 1/2 messages held for a cluster peer until it acknowledges them: `peer \0 seq` → message.
const CLUSTER_OUTBOX: TableDefinition<&[u8], &[u8]> = TableDefinition::new("cluster_outbox");
/// Objects managed over the admin API (bridges, rules, traffic rules): `kind \0 name` → JSON.
const OBJECTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("objects");

/// Largest number of operations committed in one transaction.
const MAX_BATCH: usize = 8192;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store: {0}")]
    Db(String),
    #[error("store: cannot decode record: {0}")]
    Decode(#[from] postcard::Error),
    #[error("store: writer stopped")]
    Closed,
}

macro_rules! db_err {
    ($($t:ty),*) => {$(impl From<$t> for StoreError {
        fn from(e: $t) -> Self { StoreError::Db(e.to_string()) }
    })*};
}
db_err!(redb::DatabaseError, redb::TransactionError, redb::TableError, redb::StorageError, redb::CommitError);

/// A persistent session as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub tenant: String,
    pub client_id: String,
    pub expiry_secs: u32,
    pub created_ms: u64,
    /// When the client went away; `None` while connected.
    pub disconnected_ms: Option<u64>,
    pub protocol_level: u8,
    pub username: Option<String>,
    /// Filter as the client gave it (`$share/...` included) and its options.
    pub subscriptions: Vec<(String, SubOptions)>,
}

/// A QoS 1/2 message waiting in (or in flight from) a persistent session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredDelivery {
    pub message: Message,
    pub qos: QoS,
    pub retain: bool,
    pub subscription_ids: Vec<u32>,
    /// The client sent PUBREC: on resume, PUBREL with this packet id is resent.
    pub released_packet_id: Option<u16>,
    /// Sent with this packet id and not acknowledged yet: on resume, sent again with it and DUP.
    /// Kept in its own table (written by `put_inflight`), not in the delivery's record.
    #[serde(skip)]
    pub sent_packet_id: Option<u16>,
}

#[derive(Clone, Copy)]
enum Table {
    Retained,
    Sessions,
    Messages,
    Inflight,
    Outbox,
    Objects,
}

enum Op {
    Put(Table, Vec<u8>, Vec<u8>),
    Delete(Table, Vec<u8>),
    /// Deletes a session message and its in-flight packet id.
    DeleteDelivery(Vec<u8>),
    /// Deletes a session record and all of its messages.
    DeleteSession(Vec<u8>),
    /// Deletes everything held for a cluster peer.
    DeleteOutbox(Vec<u8>),
}

/// The session key: `tenant \0 client_id` (neither may contain NUL; CONNECT refuses such ids).
pub fn session_key(tenant: &str, client_id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(tenant.len() + client_id.len() + 1);
    k.extend_from_slice(tenant.as_bytes());
    k.push(0);
    k.extend_from_slice(client_id.as_bytes());
    k
}

fn message_key(session: &[u8], seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(session.len() + 9);
    k.extend_from_slice(session);
    k.push(0);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn message_prefix_range(session: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut lo = session.to_vec();
    lo.push(0);
    let mut hi = session.to_vec();
    hi.push(1);
    (lo, hi)
}

/// A point in the write stream: awaiting it means everything submitted up to it is on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ticket(u64);

struct Sender {
    tx: mpsc::Sender<(u64, Op)>,
    next: u64,
}

pub struct Store {
    sender: Mutex<Option<Sender>>,
    committed: watch::Receiver<u64>,
    writer: Mutex<Option<JoinHandle<()>>>,
    db: Arc<Database>,
    /// Sequence numbers for session messages; restored above the highest stored one.
    next_message_seq: std::sync::atomic::AtomicU64,
    /// Transactions committed since open (each one fsync), however many writes each carried.
    commits: Arc<std::sync::atomic::AtomicU64>,
}

/// Everything read back at start.
#[derive(Default)]
pub struct Loaded {
    pub retained: Vec<Message>,
    pub sessions: Vec<(SessionRecord, Vec<(u64, StoredDelivery)>)>,
}

impl Store {
    /// Opens (or creates) the store in `dir` and starts its writer thread.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Db(format!("{}: {e}", dir.display())))?;
        let db = Arc::new(Database::create(dir.join("starling.redb"))?);
        let txn = db.begin_write()?;
        txn.open_table(RETAINED)?;
        txn.open_table(SESSIONS)?;
        txn.open_table(SESSION_MESSAGES)?;
        txn.open_table(SESSION_INFLIGHT)?;
        txn.open_table(CLUSTER_OUTBOX)?;
        txn.open_table(OBJECTS)?;
        txn.commit()?;

        let (tx, rx) = mpsc::channel::<(u64, Op)>();
        let (committed_tx, committed) = watch::channel(0u64);
        let writer_db = db.clone();
        let commits = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let writer_commits = commits.clone();
        let writer = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || write_loop(&writer_db, rx, committed_tx, &writer_commits))
            .map_err(|e| StoreError::Db(e.to_string()))?;
        Ok(Store {
            sender: Mutex::new(Some(Sender { tx, next: 1 })),
            committed,
            writer: Mutex::new(Some(writer)),
            db,
            next_message_seq: std::sync::atomic::AtomicU64::new(1),
            commits,
        })
    }

    fn submit(&self, op: Op) -> Ticket {
        let mut guard = self.sender.lock();
        match guard.as_mut() {
            Some(s) => {
                let seq = s.next;
                s.next += 1;
                if s.tx.send((seq, op)).is_err() {
                    tracing::error!("store writer is gone; a write was lost");
                }
                Ticket(seq)
            }
            None => {
                tracing::warn!("store already closed; write ignored");
                Ticket(0)
            }
        }
    }

    /// Resolves once everything submitted up to `ticket` is committed.
    pub async fn wait(&self, ticket: Ticket) {
        let mut rx = self.committed.clone();
        let _ = rx.wait_for(|c| *c >= ticket.0).await;
    }

    pub fn put_retained(&self, msg: &Message) -> Ticket {
        let key = session_key(&msg.tenant, &msg.topic);
        match postcard::to_stdvec(msg) {
            Ok(v) => self.submit(Op::Put(Table::Retained, key, v)),
            Err(e) => {
                tracing::error!(error = %e, "cannot encode retained message");
                Ticket(0)
            }
        }
    }

    pub fn delete_retained(&self, tenant: &str, topic: &str) -> Ticket {
        self.submit(Op::Delete(Table::Retained, session_key(tenant, topic)))
    }

    pub fn put_session(&self, rec: &SessionRecord) -> Ticket {
        let key = session_key(&rec.tenant, &rec.client_id);
        match postcard::to_stdvec(rec) {
            Ok(v) => self.submit(Op::Put(Table::Sessions, key, v)),
            Err(e) => {
                tracing::error!(error = %e, "cannot encode session");
                Ticket(0)
            }
        }
    }

    pub fn delete_session(&self, tenant: &str, client_id: &str) -> Ticket {
        self.submit(Op::DeleteSession(session_key(tenant, client_id)))
    }

    pub fn next_message_seq(&self) -> u64 {
        self.next_message_seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    pub fn put_delivery(&self, tenant: &str, client_id: &str, seq: u64, d: &StoredDelivery) -> Ticket {
        let key = message_key(&session_key(tenant, client_id), seq);
        match postcard::to_stdvec(d) {
            Ok(v) => self.submit(Op::Put(Table::Messages, key, v)),
            Err(e) => {
                tracing::error!(error = %e, "cannot encode queued message");
                Ticket(0)
            }
        }
    }

    /// Records that session message `seq` went out with `packet_id` (see `StoredDelivery::sent_packet_id`).
    pub fn put_inflight(&self, tenant: &str, client_id: &str, seq: u64, packet_id: u16) -> Ticket {
        let key = message_key(&session_key(tenant, client_id), seq);
        self.submit(Op::Put(Table::Inflight, key, packet_id.to_be_bytes().to_vec()))
    }

    pub fn delete_delivery(&self, tenant: &str, client_id: &str, seq: u64) -> Ticket {
        self.submit(Op::DeleteDelivery(message_key(&session_key(tenant, client_id), seq)))
    }

    /// Reads everything back (at start, before any writes).
    pub fn load(&self) -> Result<Loaded, StoreError> {
        let txn = self.db.begin_read()?;
        let mut loaded = Loaded::default();
        for entry in txn.open_table(RETAINED)?.iter()? {
            let (_, v) = entry?;
            loaded.retained.push(postcard::from_bytes(v.value())?);
        }
        let messages = txn.open_table(SESSION_MESSAGES)?;
        let inflight = txn.open_table(SESSION_INFLIGHT)?;
        let mut max_seq = 0;
        for entry in txn.open_table(SESSIONS)?.iter()? {
            let (k, v) = entry?;
            let rec: SessionRecord = postcard::from_bytes(v.value())?;
            let (lo, hi) = message_prefix_range(k.value());
            let mut queued = Vec::new();
            for m in messages.range(lo.as_slice()..hi.as_slice())? {
                let (mk, mv) = m?;
                let key = mk.value();
                let seq_bytes: [u8; 8] =
                    key[key.len() - 8..].try_into().map_err(|_| StoreError::Db("bad message key".into()))?;
                let seq = u64::from_be_bytes(seq_bytes);
                max_seq = max_seq.max(seq);
                let mut d: StoredDelivery = postcard::from_bytes(mv.value())?;
                d.sent_packet_id =
                    inflight.get(key)?.and_then(|v| <[u8; 2]>::try_from(v.value()).ok()).map(u16::from_be_bytes);
                queued.push((seq, d));
            }
            loaded.sessions.push((rec, queued));
        }
        self.next_message_seq.store(max_seq + 1, std::sync::atomic::Ordering::Relaxed);
        Ok(loaded)
    }

    /// Holds a QoS 1/2 message for cluster peer `peer` until it acknowledges `seq`.
    pub fn put_outbox<T: serde::Serialize>(&self, peer: &str, seq: u64, msg: &T) -> Ticket {
        match postcard::to_stdvec(msg) {
            Ok(v) => self.submit(Op::Put(Table::Outbox, message_key(peer.as_bytes(), seq), v)),
            Err(e) => {
                tracing::error!(peer, error = %e, "cannot encode a message for a peer; not stored");
                Ticket(0)
            }
        }
    }

    pub fn delete_outbox(&self, peer: &str, seq: u64) -> Ticket {
        self.submit(Op::Delete(Table::Outbox, message_key(peer.as_bytes(), seq)))
    }

    /// Drops everything held for a peer that left the cluster.
    pub fn clear_outbox(&self, peer: &str) -> Ticket {
        self.submit(Op::DeleteOutbox(peer.as_bytes().to_vec()))
    }

    /// Everything held for cluster peers: (peer, seq, message), in seq order per peer.
    pub fn load_outbox<T: serde::de::DeserializeOwned>(&self) -> Result<Vec<(String, u64, T)>, StoreError> {
        let txn = self.db.begin_read()?;
        let mut out = Vec::new();
        for entry in txn.open_table(CLUSTER_OUTBOX)?.iter()? {
            let (k, v) = entry?;
            let key = k.value();
            let Some(split) = key.len().checked_sub(9) else { continue };
            let seq_bytes: [u8; 8] =
                key[split + 1..].try_into().map_err(|_| StoreError::Db("bad outbox key".into()))?;
            let peer = String::from_utf8_lossy(&key[..split]).to_string();
            out.push((peer, u64::from_be_bytes(seq_bytes), postcard::from_bytes(v.value())?));
        }
        Ok(out)
    }

    /// Stores an admin-managed object (`kind` such as `bridge`) as JSON.
    pub fn put_object<T: serde::Serialize>(&self, kind: &str, name: &str, value: &T) -> Ticket {
        match serde_json::to_vec(value) {
            Ok(v) => self.submit(Op::Put(Table::Objects, session_key(kind, name), v)),
            Err(e) => {
                tracing::error!(kind, name, error = %e, "cannot encode object; not stored");
                Ticket(0)
            }
        }
    }

    pub fn delete_object(&self, kind: &str, name: &str) -> Ticket {
        self.submit(Op::Delete(Table::Objects, session_key(kind, name)))
    }

    /// Every stored object of a kind, by name; entries that no longer parse are skipped with a log line.
    pub fn load_objects<T: serde::de::DeserializeOwned>(&self, kind: &str) -> Result<Vec<(String, T)>, StoreError> {
        let txn = self.db.begin_read()?;
        let (lo, hi) = message_prefix_range(kind.as_bytes());
        let mut out = Vec::new();
        for entry in txn.open_table(OBJECTS)?.range(lo.as_slice()..hi.as_slice())? {
            let (k, v) = entry?;
            let name = String::from_utf8_lossy(&k.value()[kind.len() + 1..]).to_string();
            match serde_json::from_slice(v.value()) {
                Ok(t) => out.push((name, t)),
                Err(e) => tracing::warn!(kind, name, error = %e, "stored object no longer parses; skipped"),
            }
        }
        Ok(out)
    }

    /// Transactions committed since open.
    pub fn commits(&self) -> u64 {
        self.commits.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Commits what is queued and stops the writer. Later writes are ignored.
    pub fn close(&self) {
        self.sender.lock().take();
        if let Some(handle) = self.writer.lock().take() {
            let _ = handle.join();
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.close();
    }
}

fn write_loop(
    db: &Database,
    rx: mpsc::Receiver<(u64, Op)>,
    committed: watch::Sender<u64>,
    commits: &std::sync::atomic::AtomicU64,
) {
    let mut batch = Vec::with_capacity(256);
    while let Ok(first) = rx.recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let last = batch.last().map(|(s, _)| *s).unwrap_or(0);
        if let Err(e) = commit(db, batch.drain(..).map(|(_, op)| op)) {
            tracing::error!(error = %e, "store commit failed; this batch is not durable");
        }
        commits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        committed.send_replace(last);
    }
}

fn commit(db: &Database, ops: impl Iterator<Item = Op>) -> Result<(), StoreError> {
    let txn = db.begin_write()?;
    {
        let mut retained = txn.open_table(RETAINED)?;
        let mut sessions = txn.open_table(SESSIONS)?;
        let mut messages = txn.open_table(SESSION_MESSAGES)?;
        let mut inflight = txn.open_table(SESSION_INFLIGHT)?;
        let mut outbox = txn.open_table(CLUSTER_OUTBOX)?;
        let mut objects = txn.open_table(OBJECTS)?;
        for op in ops {
            match op {
                Op::Put(table, k, v) => {
                    let t = match table {
                        Table::Retained => &mut retained,
                        Table::Sessions => &mut sessions,
                        Table::Messages => &mut messages,
                        Table::Inflight => &mut inflight,
                        Table::Outbox => &mut outbox,
                        Table::Objects => &mut objects,
                    };
                    t.insert(k.as_slice(), v.as_slice())?;
                }
                Op::Delete(table, k) => {
                    let t = match table {
                        Table::Retained => &mut retained,
                        Table::Sessions => &mut sessions,
                        Table::Messages => &mut messages,
                        Table::Inflight => &mut inflight,
                        Table::Outbox => &mut outbox,
                        Table::Objects => &mut objects,
                    };
                    t.remove(k.as_slice())?;
                }
                Op::DeleteDelivery(k) => {
                    messages.remove(k.as_slice())?;
                    inflight.remove(k.as_slice())?;
                }
                Op::DeleteSession(k) => {
                    sessions.remove(k.as_slice())?;
                    let (lo, hi) = message_prefix_range(&k);
                    messages.retain_in(lo.as_slice()..hi.as_slice(), |_, _| false)?;
                    inflight.retain_in(lo.as_slice()..hi.as_slice(), |_, _| false)?;
                }
                Op::DeleteOutbox(peer) => {
                    let (lo, hi) = message_prefix_range(&peer);
                    outbox.retain_in(lo.as_slice()..hi.as_slice(), |_, _| false)?;
                }
            }
        }
    }
    txn.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{MessageProperties, now_ms};
    use bytes::Bytes;

    fn message(topic: &str) -> Message {
        Message {
            tenant: "global".into(),
            topic: topic.into(),
            payload: Bytes::from_static(b"x"),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: MessageProperties::default(),
            publisher: None,
            received_ms: now_ms(),
        }
    }

    #[tokio::test]
    async fn survives_reopen_and_session_delete_removes_its_messages() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            s.put_retained(&message("r/1"));
            let rec = SessionRecord {
                tenant: "global".into(),
                client_id: "c1".into(),
                expiry_secs: 60,
                created_ms: 1,
                disconnected_ms: None,
                protocol_level: 5,
                username: None,
                subscriptions: vec![("a/#".into(), SubOptions::new(QoS::AtLeastOnce))],
            };
            s.put_session(&rec);
            s.put_session(&SessionRecord { client_id: "c2".into(), ..rec.clone() });
            let d = StoredDelivery {
                message: message("a/b"),
                qos: QoS::AtLeastOnce,
                retain: false,
                subscription_ids: vec![],
                released_packet_id: None,
                sent_packet_id: None,
            };
            for seq in 1..=3 {
                s.put_delivery("global", "c1", seq, &d);
                s.put_delivery("global", "c2", seq + 10, &d);
                s.put_inflight("global", "c1", seq, 100 + seq as u16);
                s.put_inflight("global", "c2", seq + 10, 7);
            }
            s.delete_delivery("global", "c1", 2);
            let t = s.delete_session("global", "c2");
            s.wait(t).await;
        }
        let s = Store::open(dir.path()).unwrap();
        let loaded = s.load().unwrap();
        assert_eq!(loaded.retained.len(), 1);
        assert_eq!(loaded.sessions.len(), 1);
        let seqs: Vec<(u64, Option<u16>)> = loaded.sessions[0].1.iter().map(|(s, d)| (*s, d.sent_packet_id)).collect();
        assert_eq!(seqs, vec![(1, Some(101)), (3, Some(103))], "in-flight packet ids come back with their messages");
        let txn = s.db.begin_read().unwrap();
        let left = txn.open_table(SESSION_INFLIGHT).unwrap().iter().unwrap().count();
        assert_eq!(left, 2, "in-flight ids are deleted with their messages and sessions");
        assert!(s.next_message_seq() > 13 - 10);
    }

    #[tokio::test]
    async fn writes_that_queue_up_together_share_one_commit_and_all_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            let mut last = Ticket(0);
            for i in 0..2000 {
                last = s.put_retained(&message(&format!("g/{i}")));
            }
            s.wait(last).await;
            let commits = s.commits();
            assert!((1..200).contains(&commits), "2000 writes took {commits} commits: no group commit");
        }
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.load().unwrap().retained.len(), 2000, "every write of every batch is durable");
    }

    #[tokio::test]
    async fn messages_held_for_a_peer_come_back_in_order_until_deleted_or_cleared() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            for seq in [30, 10, 20] {
                s.put_outbox("node-b", seq, &message(&format!("o/{seq}")));
            }
            s.put_outbox("node-c", 5, &message("o/c"));
            s.delete_outbox("node-b", 20);
            let t = s.clear_outbox("node-c");
            s.wait(t).await;
        }
        let s = Store::open(dir.path()).unwrap();
        let held: Vec<(String, u64, String)> =
            s.load_outbox::<Message>().unwrap().into_iter().map(|(p, seq, m)| (p, seq, m.topic.to_string())).collect();
        assert_eq!(held, vec![("node-b".into(), 10, "o/10".into()), ("node-b".into(), 30, "o/30".into())]);
    }
}
