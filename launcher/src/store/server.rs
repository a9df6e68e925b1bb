//! The TCPStore server: a tokio task that speaks the c10d wire protocol to torch's own
//! `TCPStore` clients and to ours, with the semantics of torch's libuv server
//! (`docs/store-protocol.md`).
//!
//! Design, for speed at hundreds of connections: one `std::sync::Mutex<State>` held only while
//! a batch of already-decoded requests is applied (no await inside); each connection reads into
//! its own buffer, applies every complete request in it under one lock, and answers them all
//! with one write. Replies that another connection triggers (a SET that ends a WAIT) are counted
//! in the waiter's slot in `State` and flushed by the waiter's own task, always under the same
//! lock, so a STOP_WAITING can never overtake the WAIT_CANCELED that follows it.
//!
//! Hostile or broken clients are bounded by [`Limits`]: how many connections (in all, per peer
//! address, and not yet validated), how long a new connection may take to send VALIDATE, how
//! many bytes the store holds and how many partly received requests may hold. A client past a
//! limit is closed with a warning that names it; the others are not slowed.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

use elasticjob_contract::listen::every_address;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, oneshot};
use tokio::task::{JoinHandle, JoinSet};

use super::codec::{
    self, CHECK_NOT_READY, CHECK_READY, Command, DecodeError, Framer, Request, STOP_WAITING,
    WAIT_CANCELED,
};
use super::{AgentToken, StoreError};

/// How a store server runs: its limits, and the token of the launchers whose keys it keeps for
/// them (none: a plain store, as torch's).
#[derive(Debug, Clone, Default)]
pub struct ServerConfig {
    pub limits: Limits,
    pub agent_token: Option<AgentToken>,
}

impl ServerConfig {
    /// A store of the launchers of the job whose token this is.
    pub fn for_agents(token: &AgentToken) -> ServerConfig {
        ServerConfig {
            agent_token: Some(token.clone()),
            ..ServerConfig::default()
        }
    }
}

/// The key a launcher SETs, right after VALIDATE, to the job's token to be known as one. Never
/// stored; a wrong token closes the connection.
pub const AGENT_KEY: &[u8] = b"/elasticjob/agent";

/// The launchers' keys (on the wire): the rendezvous's (`rdzv/<run>/…`, which holds the flags
/// that close a round or move the store) and the static rendezvous's (`static/<run>/…`). torch
/// workers use their own (`/worker/attempt_<n>/…`, `init/`, the process groups').
const AGENT_PREFIXES: [&[u8]; 2] = [b"/rdzv/", b"/static/"];

pub fn is_agent_key(key: &[u8]) -> bool {
    AGENT_PREFIXES.iter().any(|p| key.starts_with(p))
}

/// The first launchers' key a request would change, if any.
fn agent_key_written<'a>(req: &Request<'a>) -> Option<&'a [u8]> {
    match req {
        Request::Set { key, .. }
        | Request::CompareSet { key, .. }
        | Request::Add { key, .. }
        | Request::DeleteKey { key }
        | Request::Append { key, .. }
        | Request::QueuePush { key, .. }
        | Request::QueuePop { key }
        | Request::Barrier { key, .. } => Some(*key).filter(|k| is_agent_key(k)),
        Request::MultiSet { pairs } => pairs.iter().map(|(k, _)| *k).find(|k| is_agent_key(k)),
        _ => None,
    }
}

/// What one store server allows, so that no client can take it down or slow the others.
/// The defaults leave room for the largest jobs (a connection per worker and a few per node).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Open connections in all; more are closed as they are accepted.
    pub connections: usize,
    /// Open connections from one peer address (a pod's workers and agent share one).
    pub connections_per_peer: usize,
    /// Connections that have not yet sent VALIDATE (torch's clients send it first thing).
    pub unvalidated: usize,
    /// Of those, from one peer address: a flood from one address leaves room for the others.
    pub unvalidated_per_peer: usize,
    /// How long a new connection has to send VALIDATE.
    pub validate_within: Duration,
    /// Bytes of keys and values the store holds; a request that could pass it is refused.
    pub stored_bytes: usize,
    /// Bytes held by requests still arriving, over all connections.
    pub buffered_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            connections: 32 * 1024,
            connections_per_peer: 4 * 1024,
            unvalidated: 512,
            unvalidated_per_peer: 64,
            validate_within: Duration::from_secs(10),
            stored_bytes: 1024 * 1024 * 1024,
            buffered_bytes: 512 * 1024 * 1024,
        }
    }
}

/// A running store server. Dropping it (or [`StoreServer::shutdown`]) stops accepting and
/// closes every connection.
pub struct StoreServer {
    local_addr: SocketAddr,
    /// Sending, or dropping, this stops the accept task.
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl StoreServer {
    /// Binds like torch: an empty host, `"::"` or `"*"` binds the dual-stack `[::]:port` and falls
    /// back to `0.0.0.0:port` when IPv6 is unavailable; any other host (an address such as
    /// `127.0.0.2`, or a name) binds exactly that. Port 0 lets the OS choose; see
    /// [`StoreServer::port`]. Must be called inside a tokio runtime, which runs the server.
    pub fn bind(host: &str, port: u16) -> Result<StoreServer, StoreError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| StoreError::Bind {
            addr: format!("{host}:{port}"),
            source: io::Error::other("StoreServer::bind must be called inside a tokio runtime"),
        })?;
        Self::bind_on(&runtime, host, port, ServerConfig::default())
    }

    /// As [`StoreServer::bind`], the server running on `runtime` as `config` says.
    pub fn bind_on(
        runtime: &tokio::runtime::Handle,
        host: &str,
        port: u16,
        config: ServerConfig,
    ) -> Result<StoreServer, StoreError> {
        // Registering the listener with the reactor needs the runtime's context.
        let _enter = runtime.enter();
        let listener = match host {
            "" | "::" | "*" => listen(every_address(port)).map_err(|source| StoreError::Bind {
                addr: format!("[::]:{port}"),
                source,
            })?,
            _ => {
                let bare = host
                    .strip_prefix('[')
                    .and_then(|h| h.strip_suffix(']'))
                    .unwrap_or(host);
                // Blocking resolution is fine here: binding happens once, at start-up.
                let addrs: Vec<SocketAddr> = (bare, port)
                    .to_socket_addrs()
                    .map_err(|source| StoreError::Bind {
                        addr: format!("{host}:{port}"),
                        source,
                    })?
                    .collect();
                let mut last = io::Error::new(
                    io::ErrorKind::AddrNotAvailable,
                    "host resolved to no address",
                );
                let mut bound = None;
                for addr in addrs {
                    match listen(addr) {
                        Ok(l) => {
                            bound = Some(l);
                            break;
                        }
                        Err(e) => last = e,
                    }
                }
                bound.ok_or_else(|| StoreError::Bind {
                    addr: format!("{host}:{port}"),
                    source: last,
                })?
            }
        };
        let local_addr = listener.local_addr().map_err(|source| StoreError::Bind {
            addr: format!("{host}:{port}"),
            source,
        })?;
        let (stop, stop_rx) = oneshot::channel();
        let shared = Arc::new(Shared::new(config));
        let task = runtime.spawn(accept_loop(listener, shared, stop_rx));
        tracing::debug!(%local_addr, "store server listening");
        Ok(StoreServer {
            local_addr,
            stop: Some(stop),
            task: Some(task),
        })
    }

    pub fn port(&self) -> u16 {
        self.local_addr.port()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, closes every connection, and returns once they are all closed.
    pub async fn shutdown(mut self) {
        self.stop.take();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for StoreServer {
    fn drop(&mut self) {
        // The accept task sees the sender go and aborts every connection task (closing its
        // socket).
        self.stop.take();
    }
}

fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::from_std(elasticjob_contract::listen::bind(addr)?)
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, mut stop: oneshot::Receiver<()>) {
    let mut conns = JoinSet::new();
    // Accept errors and refusals come in bursts (EMFILE while descriptors are exhausted, a
    // flood of connections): say so once per interval with a count, not once each.
    let mut accept_failures = Throttled::default();
    let mut refusals = Throttled::default();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => match shared.admit(peer.ip()) {
                    Ok(admitted) => {
                        conns.spawn(serve_connection(stream, peer, admitted, shared.clone()));
                    }
                    // Dropping the stream closes it at once.
                    Err(limit) => refusals.warn(|count| {
                        tracing::warn!(%peer, limit, refused = count, "store: refusing connections past a limit");
                    }),
                },
                Err(e) => {
                    accept_failures.warn(|count| {
                        tracing::warn!(error = %e, failures = count, "store: accept failed (out of file descriptors? raise `ulimit -n`)");
                    });
                    // Usually EMFILE/ECONNABORTED: transient; back off briefly instead of spinning.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            // Reap finished connection tasks so the set does not grow without bound.
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            // The sender is only ever dropped: that is the signal.
            _ = &mut stop => break,
        }
    }
    drop(listener);
    conns.shutdown().await;
    tracing::debug!("store server stopped");
}

/// Counts events and logs them at most once per interval, with the count since the last log.
#[derive(Default)]
struct Throttled {
    count: u64,
    last: Option<Instant>,
}

impl Throttled {
    fn warn(&mut self, log: impl FnOnce(u64)) {
        self.count += 1;
        if self
            .last
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(5))
        {
            log(self.count);
            self.last = Some(Instant::now());
            self.count = 0;
        }
    }
}

type ConnId = u64;

struct Shared {
    state: Mutex<State>,
    config: ServerConfig,
    /// Connections by peer address (their sums are the totals).
    peers: Mutex<HashMap<IpAddr, PeerConnections>>,
    connections: AtomicUsize,
    unvalidated: AtomicUsize,
    /// Bytes in connection buffers beyond [`SMALL_BUFFER`] each: requests still arriving.
    buffered: AtomicUsize,
}

#[derive(Default)]
struct PeerConnections {
    open: usize,
    unvalidated: usize,
}

/// A connection counted against the limits; dropping it (when the connection ends) uncounts it.
struct Admitted {
    shared: Arc<Shared>,
    peer: IpAddr,
    validated: bool,
    /// Authenticated as one of the job's launchers ([`AGENT_KEY`]).
    agent: bool,
    buffered: usize,
}

impl Admitted {
    fn validated(&mut self) {
        if !self.validated {
            self.validated = true;
            self.shared.unvalidated.fetch_sub(1, Ordering::Relaxed);
            if let Some(p) = self.shared.peers().get_mut(&self.peer) {
                p.unvalidated -= 1;
            }
        }
    }

    /// Accounts this connection's input buffer; false when all the requests still arriving
    /// would hold more than the limit.
    fn buffer(&mut self, len: usize) -> bool {
        let now = len.saturating_sub(SMALL_BUFFER);
        let total = if now >= self.buffered {
            self.shared
                .buffered
                .fetch_add(now - self.buffered, Ordering::Relaxed)
                + now
                - self.buffered
        } else {
            self.shared
                .buffered
                .fetch_sub(self.buffered - now, Ordering::Relaxed)
                - (self.buffered - now)
        };
        self.buffered = now;
        // A connection holding no more than its small buffer is never the one to blame.
        now == 0 || total <= self.shared.config.limits.buffered_bytes
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.buffer(0);
        self.validated();
        self.shared.connections.fetch_sub(1, Ordering::Relaxed);
        let mut peers = self.shared.peers();
        if let Some(p) = peers.get_mut(&self.peer) {
            p.open -= 1;
            if p.open == 0 {
                peers.remove(&self.peer);
            }
        }
    }
}

impl Shared {
    fn new(config: ServerConfig) -> Shared {
        Shared {
            state: Mutex::default(),
            config,
            peers: Mutex::default(),
            connections: AtomicUsize::new(0),
            unvalidated: AtomicUsize::new(0),
            buffered: AtomicUsize::new(0),
        }
    }

    /// Counts a new connection from `peer`, or names the limit it would pass.
    fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<Admitted, &'static str> {
        let limits = &self.config.limits;
        if self.connections.load(Ordering::Relaxed) >= limits.connections {
            return Err("connections");
        }
        if self.unvalidated.load(Ordering::Relaxed) >= limits.unvalidated {
            return Err("unvalidated connections");
        }
        {
            let mut peers = self.peers();
            let p = peers.entry(peer).or_default();
            if p.open >= limits.connections_per_peer {
                return Err("connections per peer");
            }
            if p.unvalidated >= limits.unvalidated_per_peer {
                return Err("unvalidated connections per peer");
            }
            p.open += 1;
            p.unvalidated += 1;
        }
        // Only the accept task adds, so the checks above cannot be raced past.
        self.connections.fetch_add(1, Ordering::Relaxed);
        self.unvalidated.fetch_add(1, Ordering::Relaxed);
        Ok(Admitted {
            shared: self.clone(),
            peer,
            validated: false,
            agent: false,
            buffered: 0,
        })
    }

    fn peers(&self) -> MutexGuard<'_, HashMap<IpAddr, PeerConnections>> {
        self.peers.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock would be a bug in `apply`; keep serving the others.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Per-connection slot: its wait registration and the replies others released for it.
struct Slot {
    /// Keys this connection still waits for (libuv's `keysAwaited_`); 0 = not waiting.
    awaited: usize,
    /// Keys it registered under, so a cancel or disconnect can unregister in O(keys).
    wait_keys: Vec<Vec<u8>>,
    /// STOP_WAITING bytes released by other connections, not yet written.
    pending_stops: usize,
    notify: Arc<Notify>,
    /// Ephemeral keys this connection set last ([`is_ephemeral`]): deleted when it closes.
    owned: Vec<Vec<u8>>,
}

/// Keys with a path segment `ephemeral` (`.../ephemeral/...`) live as long as the connection
/// that set them last: the rendezvous marks each agent alive with one, so a crashed agent (its
/// kernel closes its connections) is known gone at once. Not a torch feature: torch clients
/// never use such names.
pub fn is_ephemeral(key: &[u8]) -> bool {
    key.windows(EPHEMERAL_SEGMENT.len())
        .any(|w| w == EPHEMERAL_SEGMENT)
}

const EPHEMERAL_SEGMENT: &[u8] = b"/ephemeral/";

#[derive(Default)]
struct State {
    kv: HashMap<Vec<u8>, Vec<u8>>,
    queues: HashMap<Vec<u8>, VecDeque<Vec<u8>>>,
    /// key → connections waiting on it, in registration order (a connection appears once per
    /// time the key was named, as in libuv).
    waiting: HashMap<Vec<u8>, Vec<ConnId>>,
    slots: HashMap<ConnId, Slot>,
    /// Sum of every slot's `pending_stops`: lets the hot path skip the slot lookup.
    pending_total: usize,
    next_id: ConnId,
    /// Ephemeral key → the connection that set it last.
    ephemeral_owners: HashMap<Vec<u8>, ConnId>,
    /// Bytes of the keys and values in `kv` and `queues`, for [`Limits::stored_bytes`].
    stored: usize,
}

/// Why a connection is closed by the server.
#[derive(Debug, thiserror::Error)]
enum Close {
    #[error("malformed request: {0}")]
    Decode(#[from] DecodeError),
    #[error("first command was {0}, not VALIDATE")]
    NotValidated(String),
    #[error("{command} on key {key:?}: stored value {value:?} is not a decimal integer")]
    NotANumber {
        command: Command,
        key: String,
        value: String,
    },
    #[error("connection closed in the middle of a request ({0} bytes unparsed)")]
    Truncated(usize),
    #[error("did not send VALIDATE within {0:?} of connecting")]
    ValidateTimeout(Duration),
    #[error(
        "{command} of {len} bytes refused: the store holds {stored} bytes, its limit is {limit}"
    )]
    StoreFull {
        command: Command,
        len: usize,
        stored: usize,
        limit: usize,
    },
    #[error("requests still arriving on all connections hold more than the limit of {0} bytes")]
    Buffered(usize),
    #[error(
        "{command} of {key:?} refused: only the job's launchers may write their keys, and this connection did not authenticate as one"
    )]
    AgentKey { command: Command, key: String },
    #[error("wrong launcher token (do the job's launchers have different ELASTICJOB_STORE_TOKEN?)")]
    WrongToken,
}

impl State {
    fn register(&mut self) -> (ConnId, Arc<Notify>) {
        self.next_id += 1;
        let notify = Arc::new(Notify::new());
        let slot = Slot {
            awaited: 0,
            wait_keys: Vec::new(),
            pending_stops: 0,
            notify: notify.clone(),
            owned: Vec::new(),
        };
        self.slots.insert(self.next_id, slot);
        (self.next_id, notify)
    }

    fn unregister(&mut self, me: ConnId) {
        self.clear_wait(me);
        if let Some(slot) = self.slots.remove(&me) {
            self.pending_total -= slot.pending_stops;
            for key in slot.owned {
                if self.ephemeral_owners.get(&key) == Some(&me) {
                    self.ephemeral_owners.remove(&key);
                    self.remove(&key);
                }
            }
        }
    }

    /// Drops `me`'s wait registrations (CANCEL_WAIT, a new WAIT/BARRIER, disconnect).
    fn clear_wait(&mut self, me: ConnId) {
        let Some(slot) = self.slots.get_mut(&me) else {
            return;
        };
        slot.awaited = 0;
        for key in std::mem::take(&mut slot.wait_keys) {
            if let Some(list) = self.waiting.get_mut(&key) {
                list.retain(|c| *c != me);
                if list.is_empty() {
                    self.waiting.remove(&key);
                }
            }
        }
    }

    fn register_wait(&mut self, me: ConnId, keys: Vec<Vec<u8>>) {
        self.clear_wait(me);
        for key in &keys {
            self.waiting.entry(key.clone()).or_default().push(me);
        }
        if let Some(slot) = self.slots.get_mut(&me) {
            slot.awaited = keys.len();
            slot.wait_keys = keys;
        }
    }

    /// One of `conn`'s awaited keys appeared; release it if that was the last one.
    fn key_appeared_for(&mut self, conn: ConnId, me: ConnId) -> bool {
        let Some(slot) = self.slots.get_mut(&conn) else {
            return false;
        };
        if slot.awaited == 0 {
            return false;
        }
        slot.awaited -= 1;
        if slot.awaited > 0 {
            return false;
        }
        slot.wait_keys.clear();
        slot.pending_stops += 1;
        self.pending_total += 1;
        // Our own task flushes after every request; only other tasks need waking.
        if conn != me {
            slot.notify.notify_one();
        }
        true
    }

    /// SET/ADD/APPEND/COMPARE_SET/BARRIER: every waiter on `key` counts it as present.
    fn wake_all(&mut self, key: &[u8], me: ConnId) {
        if let Some(list) = self.waiting.remove(key) {
            for conn in list {
                self.key_appeared_for(conn, me);
            }
        }
    }

    /// QUEUE_PUSH: waiters on `key`, in registration order, count it as present up to and
    /// including the first one whose wait that completes, so one item releases one popper.
    fn wake_one(&mut self, key: &[u8], me: ConnId) {
        let Some(mut list) = self.waiting.remove(key) else {
            return;
        };
        let mut released = false;
        while !released && !list.is_empty() {
            let conn = list.remove(0);
            released = self.key_appeared_for(conn, me);
        }
        if !list.is_empty() {
            self.waiting.insert(key.to_vec(), list);
        }
    }

    fn flush_pending(&mut self, me: ConnId, out: &mut Vec<u8>) {
        if self.pending_total == 0 {
            return;
        }
        if let Some(slot) = self.slots.get_mut(&me) {
            let n = std::mem::take(&mut slot.pending_stops);
            self.pending_total -= n;
            out.resize(out.len() + n, STOP_WAITING);
        }
    }

    fn exists(&self, key: &[u8]) -> bool {
        self.kv.contains_key(key) || self.queues.get(key).is_some_and(|q| !q.is_empty())
    }

    fn set(&mut self, key: &[u8], value: &[u8], me: ConnId) {
        if is_ephemeral(key)
            && self.ephemeral_owners.insert(key.to_vec(), me) != Some(me)
            && let Some(slot) = self.slots.get_mut(&me)
        {
            slot.owned.push(key.to_vec());
        }
        self.put(key, value);
        self.wake_all(key, me);
    }

    /// Stores `value` under `key`, accounting the bytes.
    fn put(&mut self, key: &[u8], value: &[u8]) {
        match self.kv.get_mut(key) {
            // Reuse the old value's allocation: the common case of a key written repeatedly.
            Some(old) => {
                self.stored = self.stored - old.len() + value.len();
                old.clear();
                old.extend_from_slice(value);
            }
            None => {
                self.stored += key.len() + value.len();
                self.kv.insert(key.to_vec(), value.to_vec());
            }
        }
    }

    /// Removes `key` and its value, accounting the bytes; true if it was there.
    fn remove(&mut self, key: &[u8]) -> bool {
        match self.kv.remove(key) {
            Some(old) => {
                self.stored -= key.len() + old.len();
                true
            }
            None => false,
        }
    }

    /// Adds to the decimal counter at `key` (absent = 0), as torch's ADD and BARRIER do.
    fn add(&mut self, command: Command, key: &[u8], delta: i64) -> Result<i64, Close> {
        let new = match self.kv.get(key) {
            Some(old) => codec::parse_stoll(old)
                .ok_or_else(|| Close::NotANumber {
                    command,
                    key: String::from_utf8_lossy(key).into_owned(),
                    value: String::from_utf8_lossy(&old[..old.len().min(64)]).into_owned(),
                })?
                .wrapping_add(delta),
            None => delta,
        };
        self.put(key, new.to_string().as_bytes());
        Ok(new)
    }

    /// Applies one request from connection `me`, appending its immediate reply to `out`.
    fn apply(&mut self, me: ConnId, req: Request<'_>, out: &mut Vec<u8>) -> Result<(), Close> {
        match req {
            // A repeated VALIDATE with the right magic is harmless (the decoder checked it).
            Request::Validate { .. } => {}
            Request::Set { key, value } => self.set(key, value, me),
            Request::CompareSet {
                key,
                expected,
                desired,
            } => {
                match self.kv.get(key) {
                    None if expected.is_empty() => {
                        self.put(key, desired);
                        codec::put_bytes(out, desired);
                    }
                    // Absent key, non-empty expectation: torch answers `expected`, writes nothing.
                    None => codec::put_bytes(out, expected),
                    Some(current) => {
                        if current.as_slice() == expected {
                            self.put(key, desired);
                        }
                        codec::put_bytes(out, &self.kv[key]);
                    }
                }
                // torch's libuv server wakes waiters on the key in every branch.
                self.wake_all(key, me);
            }
            Request::Get { key } => {
                codec::put_bytes(out, self.kv.get(key).map_or(&[][..], Vec::as_slice))
            }
            Request::Add { key, delta } => {
                let new = self.add(Command::Add, key, delta)?;
                codec::put_i64(out, new);
                self.wake_all(key, me);
            }
            Request::Check { keys } => {
                let ready = keys.iter().all(|k| self.exists(k));
                codec::put_u8(out, if ready { CHECK_READY } else { CHECK_NOT_READY });
            }
            Request::Wait { keys } => {
                if keys.iter().all(|k| self.exists(k)) {
                    codec::put_u8(out, STOP_WAITING);
                } else {
                    // Only keys missing from the map count, as in libuv (a non-empty queue
                    // satisfies CHECK but an empty one must be waited for).
                    let missing = keys
                        .iter()
                        .filter(|k| !self.kv.contains_key(**k))
                        .map(|k| k.to_vec())
                        .collect();
                    self.register_wait(me, missing);
                }
            }
            Request::GetNumKeys => codec::put_i64(out, self.kv.len() as i64),
            Request::DeleteKey { key } => codec::put_i64(out, i64::from(self.remove(key))),
            Request::Append { key, value } => {
                match self.kv.get_mut(key) {
                    Some(old) => {
                        self.stored += value.len();
                        old.extend_from_slice(value);
                    }
                    None => self.put(key, value),
                }
                self.wake_all(key, me);
            }
            Request::MultiGet { keys } => {
                for key in keys {
                    codec::put_bytes(out, self.kv.get(key).map_or(&[][..], Vec::as_slice));
                }
            }
            Request::MultiSet { pairs } => {
                for (key, value) in pairs {
                    self.set(key, value, me);
                }
            }
            Request::CancelWait => {
                self.clear_wait(me);
                // A STOP_WAITING released before the cancel goes out first.
                self.flush_pending(me, out);
                codec::put_u8(out, WAIT_CANCELED);
            }
            Request::Ping { nonce } => codec::put_u32(out, nonce),
            Request::QueuePush { key, value } => {
                let queue = self.queues.entry(key.to_vec()).or_insert_with(|| {
                    self.stored += key.len();
                    VecDeque::new()
                });
                queue.push_back(value.to_vec());
                self.stored += value.len();
                self.wake_one(key, me);
            }
            Request::QueuePop { key } => {
                let queue = self.queues.get_mut(key);
                let len = queue.as_ref().map_or(0, |q| q.len());
                codec::put_i64(out, len as i64);
                if let Some(head) = queue.and_then(VecDeque::pop_front) {
                    self.stored -= head.len();
                    codec::put_bytes(out, &head);
                }
            }
            Request::QueueLen { key } => {
                codec::put_i64(out, self.queues.get(key).map_or(0, |q| q.len()) as i64);
            }
            Request::ListKeys => {
                codec::put_i64(out, self.kv.len() as i64);
                for key in self.kv.keys() {
                    codec::put_bytes(out, key);
                }
            }
            Request::Barrier { key, world_size } => {
                let count = self.add(Command::Barrier, key, 1)?;
                if count >= world_size {
                    self.wake_all(key, me);
                    codec::put_u8(out, STOP_WAITING);
                } else {
                    self.register_wait(me, vec![key.to_vec()]);
                }
            }
        }
        Ok(())
    }
}

/// Reads, applies and answers one connection until it closes, misbehaves or the server stops.
async fn serve_connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    mut admitted: Admitted,
    shared: Arc<Shared>,
) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(%peer, error = %e, "store: cannot set TCP_NODELAY");
    }
    let (me, notify) = shared.lock().register();
    let result = connection_loop(&mut stream, me, &notify, &shared, &mut admitted).await;
    shared.lock().unregister(me);
    match result {
        Ok(()) => tracing::debug!(%peer, "store: client disconnected"),
        Err(ConnEnd::Io(e)) => tracing::debug!(%peer, error = %e, "store: connection error"),
        Err(ConnEnd::Close(reason)) => tracing::warn!(%peer, %reason, "store: closing connection"),
    }
}

enum ConnEnd {
    Io(io::Error),
    Close(Close),
}

impl From<Close> for ConnEnd {
    fn from(close: Close) -> Self {
        ConnEnd::Close(close)
    }
}

/// Per-connection buffers start at this size and are shrunk back to it after growing past
/// `BIG_BUFFER` for a large value.
const SMALL_BUFFER: usize = 16 * 1024;
const BIG_BUFFER: usize = 1024 * 1024;

async fn connection_loop(
    stream: &mut TcpStream,
    me: ConnId,
    notify: &Notify,
    shared: &Shared,
    admitted: &mut Admitted,
) -> Result<(), ConnEnd> {
    let mut inbuf: Vec<u8> = Vec::with_capacity(SMALL_BUFFER);
    let mut out: Vec<u8> = Vec::with_capacity(SMALL_BUFFER);
    let mut framer = Framer::default();
    let validate_within = shared.config.limits.validate_within;
    let validate_deadline = tokio::time::sleep(validate_within);
    tokio::pin!(validate_deadline);
    // One `Notified` kept across iterations (re-armed after it fires) rather than a new one per
    // select: this loop runs once per request batch.
    let notified = notify.notified();
    tokio::pin!(notified);
    loop {
        inbuf.reserve(8 * 1024);
        tokio::select! {
            read = stream.read_buf(&mut inbuf) => {
                let n = read.map_err(ConnEnd::Io)?;
                if n == 0 {
                    return if inbuf.is_empty() { Ok(()) } else { Err(Close::Truncated(inbuf.len()).into()) };
                }
                if !admitted.validated {
                    // Refuse a stranger (port scanner, HTTP probe) at its first byte.
                    if inbuf[0] != Command::Validate as u8 {
                        let name = Command::from_byte(inbuf[0])
                            .map_or_else(|| format!("byte {}", inbuf[0]), |c| c.name().to_string());
                        return Err(Close::NotValidated(name).into());
                    }
                }
                if !admitted.buffer(inbuf.len()) {
                    return Err(Close::Buffered(shared.config.limits.buffered_bytes).into());
                }
                let consumed = process(&inbuf, me, shared, &mut out, &mut framer, admitted)?;
                inbuf.drain(..consumed);
                // After a multi-MiB value, give the memory back: there may be thousands of us.
                if inbuf.capacity() > BIG_BUFFER && inbuf.len() < SMALL_BUFFER {
                    inbuf.shrink_to(SMALL_BUFFER);
                }
                admitted.buffer(inbuf.len());
            }
            _ = &mut validate_deadline, if !admitted.validated => {
                return Err(Close::ValidateTimeout(validate_within).into());
            }
            // Another connection released our WAIT or BARRIER.
            _ = &mut notified => {
                notified.set(notify.notified());
                shared.lock().flush_pending(me, &mut out);
            }
        }
        if !out.is_empty() {
            stream.write_all(&out).await.map_err(ConnEnd::Io)?;
            out.clear();
            if out.capacity() > BIG_BUFFER {
                out.shrink_to(SMALL_BUFFER);
            }
        }
    }
}

/// Applies every complete request at the front of `buf` under one lock; returns bytes consumed.
/// `framer` carries over, between calls, how far the incomplete request at the end was scanned
/// ([`next_request`]).
fn process(
    buf: &[u8],
    me: ConnId,
    shared: &Shared,
    out: &mut Vec<u8>,
    framer: &mut Framer,
    admitted: &mut Admitted,
) -> Result<usize, Close> {
    let mut pos = 0;
    // Decode before locking: a partial request needs no lock at all.
    let mut state = None;
    while let Some((req, len)) = next_request(&buf[pos..], framer)? {
        pos += len;
        // The first request is VALIDATE: checked by the caller and the decoder.
        admitted.validated();
        if let Some(token) = &shared.config.agent_token {
            if let Request::Set {
                key: AGENT_KEY,
                value,
            } = req
            {
                if value != token.as_bytes() {
                    return Err(Close::WrongToken);
                }
                admitted.agent = true;
                continue;
            }
            if !admitted.agent
                && let Some(key) = agent_key_written(&req)
            {
                return Err(Close::AgentKey {
                    command: req.command(),
                    key: String::from_utf8_lossy(key).into_owned(),
                });
            }
        }
        let state = state.get_or_insert_with(|| shared.lock());
        let limit = shared.config.limits.stored_bytes;
        // The request's length bounds what it can add to the store.
        if grows_the_store(&req) && state.stored + len > limit {
            return Err(Close::StoreFull {
                command: req.command(),
                len,
                stored: state.stored,
                limit,
            });
        }
        state.flush_pending(me, out);
        state.apply(me, req, out)?;
    }
    if let Some(mut state) = state {
        state.flush_pending(me, out);
    }
    Ok(pos)
}

/// The whole request at the front of `buf`, if it is all there. One that is (the usual case)
/// is decoded in one pass; one that is not is handed to `framer`, which scans only what is new
/// on each later read, so a request trickling in costs one pass over its bytes, not one per
/// read.
fn next_request<'a>(
    buf: &'a [u8],
    framer: &mut Framer,
) -> Result<Option<(Request<'a>, usize)>, DecodeError> {
    if framer.is_idle()
        && let Some((req, len)) = codec::decode_request(buf)?
    {
        if len as u64 > codec::MAX_REQUEST_LEN {
            return Err(DecodeError::RequestTooLarge {
                command: req.command(),
            });
        }
        return Ok(Some((req, len)));
    }
    let Some(len) = framer.frame(buf)? else {
        return Ok(None);
    };
    let (req, _) = codec::decode_request(&buf[..len])?.expect("the framer found a whole request");
    Ok(Some((req, len)))
}

fn grows_the_store(req: &Request<'_>) -> bool {
    matches!(
        req,
        Request::Set { .. }
            | Request::CompareSet { .. }
            | Request::Add { .. }
            | Request::Append { .. }
            | Request::MultiSet { .. }
            | Request::QueuePush { .. }
            | Request::Barrier { .. }
    )
}
