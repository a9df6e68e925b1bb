//! An async TCPStore client with the semantics of torch's Python `TCPStore` (and, through
//! [`StoreClient::prefixed`], of `PrefixStore`).
//!
//! One TCP connection per [`StoreClient::connect`], shared by every clone and prefixed view and
//! guarded by a tokio mutex, so at most one request is outstanding, as in torch's client.
//! A connection that saw an IO error, an EOF, a reply timeout or a request abandoned half-way
//! (its future dropped) is marked broken: later calls fail fast with
//! [`StoreError::ConnectionLost`] instead of reading a stale reply.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::codec::{
    self, Command, Reply, ReplyShape, Request, STOP_WAITING, VALIDATION_MAGIC, WAIT_CANCELED,
};
use super::server::AGENT_KEY;
use super::{AgentToken, StoreError};

/// The key torch's TCPStore sends without its `/` prefix (the worker counter of
/// `TCPStore(world_size=..)`).
pub const INIT_KEY: &str = "init/";

/// How long a CANCEL_WAIT may take to be answered (a live server answers at once).
const CANCEL_REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// Default per-request timeout, as torch's default store timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
/// Longest single connect attempt (TCP connect and the PING handshake); `connect` retries,
/// resolving the name again, until its own timeout.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// A handle on a store connection. Cheap to clone; clones and prefixed views share the
/// connection.
#[derive(Clone)]
pub struct StoreClient {
    conn: Arc<Connection>,
    /// `""` for the plain store, else the PrefixStore prefix (nested prefixes joined by `/`).
    prefix: Arc<str>,
    timeout: Duration,
}

struct Connection {
    /// `host:port` as given, for error messages.
    addr: String,
    /// What `connect` was given, for `reconnect`.
    host: String,
    port: u16,
    /// How it was made, for `reconnect`.
    connector: Connector,
    io: Mutex<Io>,
}

struct Io {
    stream: TcpStream,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    /// Why the connection can no longer be used, once it cannot.
    broken: Option<String>,
    /// Set while a request/reply exchange is in progress; still set at the next call means the
    /// previous call's future was dropped mid-exchange and the stream is out of step.
    busy: bool,
}

impl std::fmt::Debug for StoreClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreClient")
            .field("addr", &self.conn.addr)
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// How connections are made: as a plain client (torch's), or as one of the job's launchers.
#[derive(Debug, Clone, Default)]
pub struct Connector {
    agent: Option<AgentToken>,
}

impl Connector {
    /// Connections that authenticate as one of the job's launchers, right after VALIDATE, so
    /// they may write the launchers' keys on a store that knows `token`.
    pub fn agent(token: &AgentToken) -> Connector {
        Connector {
            agent: Some(token.clone()),
        }
    }

    /// Connects to the store at `host:port`, retrying refused or unreachable connections with
    /// exponential backoff and jitter until `timeout` has passed, then sends VALIDATE and PING
    /// and checks the echo. `timeout` is also the client's default per-request timeout.
    pub async fn connect(
        &self,
        host: &str,
        port: u16,
        timeout: Duration,
    ) -> Result<StoreClient, StoreError> {
        self.connect_with(host, port, timeout, true).await
    }

    /// One connection attempt within `timeout`, no retries: whether a store answers there now
    /// (probing for the rendezvous store). `timeout` is also the per-request timeout.
    pub async fn connect_once(
        &self,
        host: &str,
        port: u16,
        timeout: Duration,
    ) -> Result<StoreClient, StoreError> {
        self.connect_with(host, port, timeout, false).await
    }

    async fn connect_with(
        &self,
        host: &str,
        port: u16,
        timeout: Duration,
        retry: bool,
    ) -> Result<StoreClient, StoreError> {
        // Accept a bracketed IPv6 literal as found in endpoints ("[::1]").
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let addr = if bare.contains(':') {
            format!("[{bare}]:{port}")
        } else {
            format!("{bare}:{port}")
        };
        let start = Instant::now();
        let deadline = start + timeout;
        let mut delay = Duration::from_millis(20);
        let mut attempts = 0u32;
        let mut last_error = None;
        loop {
            attempts += 1;
            // Each attempt gets at most ATTEMPT_TIMEOUT: a connect to an address that is gone
            // (a recreated pod's old IP, still in DNS for a moment) gets no answer at all and
            // would otherwise sit out the kernel's SYN retries (~2 minutes) before the next
            // attempt resolves the name again.
            let attempt_deadline = deadline.min(Instant::now() + ATTEMPT_TIMEOUT);
            let attempt = handshake(bare, port, self.agent.as_ref(), attempt_deadline);
            match tokio::time::timeout_at(attempt_deadline, attempt).await {
                Ok(Ok(io)) => {
                    let conn = Arc::new(Connection {
                        addr,
                        host: bare.to_string(),
                        port,
                        connector: self.clone(),
                        io: Mutex::new(io),
                    });
                    return Ok(StoreClient {
                        conn,
                        prefix: Arc::from(""),
                        timeout,
                    });
                }
                Ok(Err(e)) => {
                    tracing::debug!(%addr, attempts, error = %e, "store: connect failed, retrying");
                    last_error = Some(e);
                }
                // Cut short by the deadline: the previous attempt's error says more.
                Err(_) => {
                    last_error
                        .get_or_insert_with(|| "timed out during connect or handshake".into());
                }
            }
            // Jitter in [0.5, 1.5) spreads out many agents retrying against one store.
            let wake = Instant::now() + delay.mul_f64(0.5 + rand::random::<f64>());
            if !retry || wake >= deadline {
                let last_error = last_error.unwrap_or_default();
                return Err(StoreError::Connect {
                    addr,
                    waited: start.elapsed(),
                    attempts,
                    last_error,
                });
            }
            tokio::time::sleep_until(wake).await;
            delay = (delay * 3 / 2).min(Duration::from_secs(1));
        }
    }
}

impl StoreClient {
    /// A plain client's [`Connector::connect`].
    pub async fn connect(
        host: &str,
        port: u16,
        timeout: Duration,
    ) -> Result<StoreClient, StoreError> {
        Connector::default().connect(host, port, timeout).await
    }

    /// A plain client's [`Connector::connect_once`].
    pub async fn connect_once(
        host: &str,
        port: u16,
        timeout: Duration,
    ) -> Result<StoreClient, StoreError> {
        Connector::default().connect_once(host, port, timeout).await
    }

    /// A second, independent connection to the same store, with this view's prefix and
    /// timeout (for a watcher that blocks in `wait` while this connection stays free). Retries
    /// like `connect` for up to the view's timeout.
    pub async fn reconnect(&self) -> Result<StoreClient, StoreError> {
        let fresh = (self.conn.connector)
            .connect(&self.conn.host, self.conn.port, self.timeout)
            .await?;
        Ok(StoreClient {
            conn: fresh.conn,
            ..self.clone()
        })
    }

    /// `host:port` of the store.
    pub fn addr(&self) -> &str {
        &self.conn.addr
    }

    /// The timeout used by `get`, `multi_get`, blocking `queue_pop` and every reply.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// A view with another default timeout, on the same connection.
    pub fn with_timeout(&self, timeout: Duration) -> StoreClient {
        StoreClient {
            timeout,
            ..self.clone()
        }
    }

    /// A view whose keys are `prefix + "/" + key` (torch's `PrefixStore`), on the same
    /// connection. Views nest: `c.prefixed("a").prefixed("b")` writes `a/b/key`.
    pub fn prefixed(&self, prefix: &str) -> StoreClient {
        let joined = if self.prefix.is_empty() {
            prefix.to_string()
        } else {
            format!("{}/{prefix}", self.prefix)
        };
        StoreClient {
            prefix: Arc::from(joined),
            ..self.clone()
        }
    }

    /// The key as it travels: TCPStore's `/` in front, after the PrefixStore join; the plain
    /// store's `init/` goes bare, as TCPStore sends it.
    fn wire_key(&self, key: &str) -> Vec<u8> {
        if self.prefix.is_empty() {
            if key == INIT_KEY {
                return key.as_bytes().to_vec();
            }
            format!("/{key}").into_bytes()
        } else {
            format!("/{}/{key}", self.prefix).into_bytes()
        }
    }

    fn wire_keys(&self, keys: &[&str]) -> Vec<Vec<u8>> {
        keys.iter().map(|k| self.wire_key(k)).collect()
    }

    pub async fn set(&self, key: &str, value: impl AsRef<[u8]>) -> Result<(), StoreError> {
        let key = self.wire_key(key);
        self.send_only(&Request::Set {
            key: &key,
            value: value.as_ref(),
        })
        .await
    }

    /// Waits (up to the client's timeout) for `key`, then returns its value.
    pub async fn get(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        let key = self.wire_key(key);
        let mut io = self.lock().await?;
        io.wait(&self.conn.addr, &[&key], self.timeout).await?;
        match io
            .call(&self.conn.addr, &Request::Get { key: &key }, self.timeout)
            .await?
        {
            Reply::Bytes(v) => Ok(v),
            other => Err(unexpected(&self.conn.addr, Command::Get, &other)),
        }
    }

    /// Adds `delta` to the decimal counter at `key` (absent = 0) and returns the new value.
    pub async fn add(&self, key: &str, delta: i64) -> Result<i64, StoreError> {
        let key = self.wire_key(key);
        self.call_i64(&Request::Add { key: &key, delta }).await
    }

    /// Sets `key` to `desired` if its value is `expected` (or it is absent and `expected` is
    /// empty); returns the value after the operation (`expected` for an absent key with a
    /// non-empty expectation, as torch does).
    pub async fn compare_set(
        &self,
        key: &str,
        expected: impl AsRef<[u8]>,
        desired: impl AsRef<[u8]>,
    ) -> Result<Vec<u8>, StoreError> {
        let key = self.wire_key(key);
        let req = Request::CompareSet {
            key: &key,
            expected: expected.as_ref(),
            desired: desired.as_ref(),
        };
        match self.call(&req).await? {
            Reply::Bytes(v) => Ok(v),
            other => Err(unexpected(&self.conn.addr, Command::CompareSet, &other)),
        }
    }

    /// True if every key exists (a non-empty queue counts).
    pub async fn check(&self, keys: &[&str]) -> Result<bool, StoreError> {
        let keys = self.wire_keys(keys);
        let req = Request::Check {
            keys: keys.iter().map(Vec::as_slice).collect(),
        };
        match self.call(&req).await? {
            Reply::U8(codec::CHECK_READY) => Ok(true),
            Reply::U8(codec::CHECK_NOT_READY) => Ok(false),
            other => Err(unexpected(&self.conn.addr, Command::Check, &other)),
        }
    }

    /// Waits until every key exists; after `timeout` cancels the wait on the server and fails
    /// with [`StoreError::Timeout`] naming the keys.
    pub async fn wait(&self, keys: &[&str], timeout: Duration) -> Result<(), StoreError> {
        let keys = self.wire_keys(keys);
        let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
        self.lock()
            .await?
            .wait(&self.conn.addr, &refs, timeout)
            .await
    }

    /// Deletes `key`; true if it existed.
    pub async fn delete_key(&self, key: &str) -> Result<bool, StoreError> {
        let key = self.wire_key(key);
        Ok(self.call_i64(&Request::DeleteKey { key: &key }).await? == 1)
    }

    /// Number of keys in the whole store (all prefixes, `init/` included; queues excluded).
    pub async fn num_keys(&self) -> Result<i64, StoreError> {
        self.call_i64(&Request::GetNumKeys).await
    }

    /// Appends to the value at `key`, creating it if absent.
    pub async fn append(&self, key: &str, value: impl AsRef<[u8]>) -> Result<(), StoreError> {
        let key = self.wire_key(key);
        self.send_only(&Request::Append {
            key: &key,
            value: value.as_ref(),
        })
        .await
    }

    /// Waits (up to the client's timeout) for all keys, then returns their values in order.
    pub async fn multi_get(&self, keys: &[&str]) -> Result<Vec<Vec<u8>>, StoreError> {
        let keys = self.wire_keys(keys);
        let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
        let mut io = self.lock().await?;
        io.wait(&self.conn.addr, &refs, self.timeout).await?;
        match io
            .call(
                &self.conn.addr,
                &Request::MultiGet { keys: refs },
                self.timeout,
            )
            .await?
        {
            Reply::BytesN(v) => Ok(v),
            other => Err(unexpected(&self.conn.addr, Command::MultiGet, &other)),
        }
    }

    /// Sets several keys in one request.
    pub async fn multi_set<K, V>(
        &self,
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Result<(), StoreError>
    where
        K: AsRef<str>,
        V: AsRef<[u8]>,
    {
        let owned: Vec<(Vec<u8>, V)> = pairs
            .into_iter()
            .map(|(k, v)| (self.wire_key(k.as_ref()), v))
            .collect();
        let pairs = owned
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_ref()))
            .collect();
        self.send_only(&Request::MultiSet { pairs }).await
    }

    /// Round trip with a nonce; fails if the store answers anything else.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let nonce = std::process::id() ^ rand::random::<u32>();
        match self.call(&Request::Ping { nonce }).await? {
            Reply::U32(n) if n == nonce => Ok(()),
            other => Err(unexpected(&self.conn.addr, Command::Ping, &other)),
        }
    }

    /// Appends to the FIFO queue `key` (separate from the key-value map).
    pub async fn queue_push(&self, key: &str, value: impl AsRef<[u8]>) -> Result<(), StoreError> {
        let key = self.wire_key(key);
        self.send_only(&Request::QueuePush {
            key: &key,
            value: value.as_ref(),
        })
        .await
    }

    /// Pops the head of queue `key`. With `block`, first waits (up to the client's timeout) for
    /// the queue to be non-empty. `None` when the queue is empty.
    pub async fn queue_pop(&self, key: &str, block: bool) -> Result<Option<Vec<u8>>, StoreError> {
        let key = self.wire_key(key);
        let mut io = self.lock().await?;
        if block {
            io.wait(&self.conn.addr, &[&key], self.timeout).await?;
        }
        match io
            .call(
                &self.conn.addr,
                &Request::QueuePop { key: &key },
                self.timeout,
            )
            .await?
        {
            Reply::QueuePop { value, .. } => Ok(value),
            other => Err(unexpected(&self.conn.addr, Command::QueuePop, &other)),
        }
    }

    pub async fn queue_len(&self, key: &str) -> Result<i64, StoreError> {
        let key = self.wire_key(key);
        self.call_i64(&Request::QueueLen { key: &key }).await
    }

    /// Keys as the caller names them: TCPStore strips its `/` (dropping keys without it, such
    /// as `init/`), a prefixed view keeps only its own keys and strips the prefix. Unordered.
    pub async fn list_keys(&self) -> Result<Vec<String>, StoreError> {
        let raw = match self.call(&Request::ListKeys).await? {
            Reply::KeyList(keys) => keys,
            other => return Err(unexpected(&self.conn.addr, Command::ListKeys, &other)),
        };
        let strip = if self.prefix.is_empty() {
            "/".to_string()
        } else {
            format!("/{}/", self.prefix)
        };
        Ok(raw
            .into_iter()
            .map(|k| String::from_utf8_lossy(&k).into_owned())
            .filter_map(|k| k.strip_prefix(&strip).map(str::to_string))
            .collect())
    }

    /// Blocks until `world_size` callers reached the barrier at `key`; after `timeout` cancels
    /// and fails with [`StoreError::Timeout`] (the arrival still counts, as in torch).
    pub async fn barrier(
        &self,
        key: &str,
        world_size: i64,
        timeout: Duration,
    ) -> Result<(), StoreError> {
        let key = self.wire_key(key);
        let addr = &self.conn.addr;
        let mut io = self.lock().await?;
        let released = io
            .request_then_stop_waiting(
                addr,
                &Request::Barrier {
                    key: &key,
                    world_size,
                },
                timeout,
            )
            .await?;
        if released {
            Ok(())
        } else {
            let what = format!("barrier on key {}", String::from_utf8_lossy(&key));
            Err(StoreError::Timeout {
                addr: addr.clone(),
                what,
                timeout,
            })
        }
    }

    async fn lock(&self) -> Result<tokio::sync::MutexGuard<'_, Io>, StoreError> {
        let mut io = self.conn.io.lock().await;
        if io.busy && io.broken.is_none() {
            io.broken =
                Some("an earlier request was abandoned mid-way, so replies are out of step".into());
        }
        if let Some(reason) = &io.broken {
            return Err(StoreError::ConnectionLost {
                addr: self.conn.addr.clone(),
                reason: reason.clone(),
            });
        }
        Ok(io)
    }

    async fn send_only(&self, req: &Request<'_>) -> Result<(), StoreError> {
        let mut io = self.lock().await?;
        io.busy = true;
        io.send(&self.conn.addr, req).await?;
        io.busy = false;
        Ok(())
    }

    async fn call(&self, req: &Request<'_>) -> Result<Reply, StoreError> {
        self.lock()
            .await?
            .call(&self.conn.addr, req, self.timeout)
            .await
    }

    async fn call_i64(&self, req: &Request<'_>) -> Result<i64, StoreError> {
        match self.call(req).await? {
            Reply::I64(v) => Ok(v),
            other => Err(unexpected(&self.conn.addr, req.command(), &other)),
        }
    }
}

fn unexpected(addr: &str, command: Command, reply: &Reply) -> StoreError {
    StoreError::Protocol {
        addr: addr.to_string(),
        command: command.name(),
        reason: format!("unexpected reply {reply:?}"),
    }
}

/// Connects once and performs VALIDATE + PING. Errors are strings: the caller retries them all
/// and reports only the last.
async fn handshake(
    host: &str,
    port: u16,
    agent: Option<&AgentToken>,
    deadline: Instant,
) -> Result<Io, String> {
    let stream = TcpStream::connect((host, port))
        .await
        .map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    set_keepalive(&stream);
    let mut io = Io {
        stream,
        rbuf: Vec::with_capacity(4096),
        wbuf: Vec::with_capacity(4096),
        broken: None,
        busy: false,
    };
    let nonce = std::process::id();
    // All in one write: VALIDATE and SET have no reply.
    Request::Validate {
        magic: VALIDATION_MAGIC,
    }
    .encode(&mut io.wbuf);
    if let Some(token) = agent {
        Request::Set {
            key: AGENT_KEY,
            value: token.as_bytes(),
        }
        .encode(&mut io.wbuf);
    }
    Request::Ping { nonce }.encode(&mut io.wbuf);
    io.stream
        .write_all(&io.wbuf)
        .await
        .map_err(|e| e.to_string())?;
    io.wbuf.clear();
    match io.recv(ReplyShape::U32, Some(deadline)).await {
        Ok(Some(Reply::U32(n))) if n == nonce => Ok(io),
        Ok(Some(other)) => Err(format!("PING returned {other:?}, expected nonce {nonce}")),
        Ok(None) => Err("no PING reply before the deadline".into()),
        // A store of the launchers closes a connection whose token is wrong.
        Err(e) if agent.is_some() => Err(format!(
            "{e} (a store that refuses this launcher's token closes the connection: do the job's launchers share ELASTICJOB_STORE_TOKEN?)"
        )),
        Err(e) => Err(e),
    }
}

/// Turns on TCP keep-alive with short timers so a store host that vanished without a reset
/// (power loss, partition) is noticed in about 25 s rather than hours. Best effort.
fn set_keepalive(stream: &TcpStream) {
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(10))
        .with_interval(Duration::from_secs(5))
        .with_retries(3);
    if let Err(e) = socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive) {
        tracing::debug!(error = %e, "store: cannot set TCP keep-alive");
    }
}

impl Io {
    fn lost(&mut self, addr: &str, reason: String) -> StoreError {
        self.broken = Some(reason.clone());
        StoreError::ConnectionLost {
            addr: addr.to_string(),
            reason,
        }
    }

    async fn send(&mut self, addr: &str, req: &Request<'_>) -> Result<(), StoreError> {
        if let Err(e) = req.check_limits() {
            // Nothing was sent, so the connection is still in step.
            self.busy = false;
            return Err(StoreError::InvalidRequest {
                command: req.command().name(),
                reason: e.to_string(),
            });
        }
        self.wbuf.clear();
        req.encode(&mut self.wbuf);
        if let Err(e) = self.stream.write_all(&self.wbuf).await {
            return Err(self.lost(addr, format!("sending {}: {e}", req.command())));
        }
        Ok(())
    }

    /// Reads one reply of `shape`. `Ok(None)` when `deadline` passes first (bytes read so far
    /// stay buffered: `read_buf` is cancel-safe). Errors are strings for `handshake`'s sake.
    async fn recv(
        &mut self,
        shape: ReplyShape,
        deadline: Option<Instant>,
    ) -> Result<Option<Reply>, String> {
        loop {
            match codec::decode_reply(shape, &self.rbuf) {
                Ok(Some((reply, n))) => {
                    self.rbuf.drain(..n);
                    return Ok(Some(reply));
                }
                Ok(None) => {}
                Err(e) => return Err(format!("undecodable reply: {e}")),
            }
            self.rbuf.reserve(4096);
            let read = match deadline {
                Some(d) => {
                    match tokio::time::timeout_at(d, self.stream.read_buf(&mut self.rbuf)).await {
                        Ok(r) => r,
                        Err(_) => return Ok(None),
                    }
                }
                None => self.stream.read_buf(&mut self.rbuf).await,
            };
            match read {
                Ok(0) => return Err("the store closed the connection".into()),
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    /// Sends `req` and reads its reply within `timeout`. A timeout leaves the reply in flight,
    /// so the connection is then unusable.
    async fn call(
        &mut self,
        addr: &str,
        req: &Request<'_>,
        timeout: Duration,
    ) -> Result<Reply, StoreError> {
        self.busy = true;
        self.send(addr, req).await?;
        match self
            .recv(req.reply_shape(), Some(Instant::now() + timeout))
            .await
        {
            Ok(Some(reply)) => {
                self.busy = false;
                Ok(reply)
            }
            Ok(None) => {
                self.broken = Some(format!(
                    "no reply to {} within {}ms",
                    req.command(),
                    timeout.as_millis()
                ));
                Err(StoreError::Timeout {
                    addr: addr.to_string(),
                    what: format!("reply to {}", req.command()),
                    timeout,
                })
            }
            Err(reason) => Err(self.lost(
                addr,
                format!("waiting for the reply to {}: {reason}", req.command()),
            )),
        }
    }

    /// WAIT as torch's client does it: on timeout, CANCEL_WAIT and drain a STOP_WAITING that
    /// may already be on its way.
    async fn wait(
        &mut self,
        addr: &str,
        keys: &[&[u8]],
        timeout: Duration,
    ) -> Result<(), StoreError> {
        let req = Request::Wait {
            keys: keys.to_vec(),
        };
        if self.request_then_stop_waiting(addr, &req, timeout).await? {
            return Ok(());
        }
        let keys = keys
            .iter()
            .map(|k| String::from_utf8_lossy(k))
            .collect::<Vec<_>>()
            .join(", ");
        Err(StoreError::Timeout {
            addr: addr.to_string(),
            what: format!("wait for keys {keys}"),
            timeout,
        })
    }

    /// Sends a WAIT or BARRIER; true when STOP_WAITING came within `timeout`, false when it did
    /// not and the wait was cancelled.
    async fn request_then_stop_waiting(
        &mut self,
        addr: &str,
        req: &Request<'_>,
        timeout: Duration,
    ) -> Result<bool, StoreError> {
        let cmd = req.command();
        self.busy = true;
        self.send(addr, req).await?;
        match self
            .recv(ReplyShape::U8, Some(Instant::now() + timeout))
            .await
        {
            Ok(Some(Reply::U8(STOP_WAITING))) => {
                self.busy = false;
                return Ok(true);
            }
            Ok(Some(other)) => {
                return Err(self.protocol(
                    addr,
                    cmd,
                    format!("expected STOP_WAITING, got {other:?}"),
                ));
            }
            Ok(None) => {}
            Err(reason) => return Err(self.lost(addr, format!("waiting for {cmd}: {reason}"))),
        }
        self.send(addr, &Request::CancelWait).await?;
        // The server answers a cancel at once; bound it anyway so a dead server cannot hang us.
        let deadline = Some(Instant::now() + CANCEL_REPLY_TIMEOUT);
        let mut first = true;
        loop {
            match self.recv(ReplyShape::U8, deadline).await {
                Ok(Some(Reply::U8(WAIT_CANCELED))) => {
                    self.busy = false;
                    return Ok(false);
                }
                // Released just before the cancel arrived: the cancel's reply follows.
                Ok(Some(Reply::U8(STOP_WAITING))) if first => first = false,
                Ok(Some(other)) => {
                    return Err(self.protocol(
                        addr,
                        Command::CancelWait,
                        format!("expected WAIT_CANCELED, got {other:?}"),
                    ));
                }
                Ok(None) => return Err(self.lost(addr, "no reply to CANCEL_WAIT".into())),
                Err(reason) => {
                    return Err(
                        self.lost(addr, format!("waiting for CANCEL_WAIT's reply: {reason}"))
                    );
                }
            }
        }
    }

    fn protocol(&mut self, addr: &str, command: Command, reason: String) -> StoreError {
        self.broken = Some(format!("protocol error on {command}: {reason}"));
        StoreError::Protocol {
            addr: addr.to_string(),
            command: command.name(),
            reason,
        }
    }
}
