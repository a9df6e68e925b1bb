//! The kubelet's read-only log API, as the apiserver uses it for `kubectl logs`.
//!
//! For `GET /api/v1/namespaces/NS/pods/POD/log` the 1.20 apiserver (`LogLocation` in
//! pkg/registry/core/pod/strategy.go) validates the container name against the pod spec, takes
//! the node's address by `--kubelet-preferred-address-types` (InternalIP here: 127.0.0.1) and
//! port from `status.daemonEndpoints.kubeletEndpoint.Port`, and streams
//! `https://<ip>:<port>/containerLogs/NS/POD/CONTAINER?follow=&previous=&tailLines=&limitBytes=`
//! back, presenting its `--kubelet-client-certificate`. Without
//! `--kubelet-certificate-authority` it does not verify the kubelet's serving cert.
//!
//! Each node of the stand-in has its own listener on 127.0.0.1 (a free port, its own
//! `kubeletEndpoint`, like one kubelet per machine; losing the node closes it). TLS is rustls
//! with the cluster CA's `kubelet` serving cert, and clients must present a cert signed by the
//! cluster CA (the apiserver, or an admin holding one). HTTP/1.1 by hand over blocking rustls,
//! one thread per connection (a log stream is a file read in a loop): no new dependency.
//!
//! Logs: `<pods dir>/<uid>/<container>.log` is the current run, `<container>.previous.log` the
//! run before it; the kubelet moves one to the other when a container ends and will restart
//! ([`rotate_log`]), under the lock the API reads the container's state with ([`choose_log`]).
//! `follow` streams new bytes until that run ends (or the client goes away). `sinceSeconds`,
//! `sinceTime` and `timestamps` are accepted and ignored (the files carry no timestamps).

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ServerConfig, ServerConnection, StreamOwned};
use tracing::{debug, warn};

use super::{ContainerState, Node, PodRun};
use crate::{Layout, pki};

/// How often a follow stream looks for new bytes.
const FOLLOW_POLL: Duration = Duration::from_millis(100);
const MAX_HEAD: usize = 16 * 1024;

// ---------------------------------------------------------------- pure parts

/// The query of a `/containerLogs` request (`v1.PodLogOptions`, as the kubelet decodes it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogQuery {
    pub follow: bool,
    pub previous: bool,
    pub tail_lines: Option<u64>,
    pub limit_bytes: Option<u64>,
}

/// A response that is not a log stream: status code and plain-text body (the kubelet's own
/// error texts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub body: String,
}

impl Reply {
    fn new(status: u16, body: impl Into<String>) -> Self {
        Reply {
            status,
            body: body.into(),
        }
    }
}

/// What a `GET /containerLogs/NS/POD/CONTAINER?...` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRequest {
    pub namespace: String,
    pub pod: String,
    pub container: String,
    pub query: LogQuery,
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(b[i + 1]), hex(b[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Go's `strconv.ParseBool`, plus a bare `?follow` meaning true.
fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "" | "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// Parses the query string as the kubelet does: `follow`, `previous`, `tailLines` (or the old
/// `tail`, where `all` means no limit), `limitBytes`; `timestamps`, `sinceSeconds`, `sinceTime`
/// are checked and ignored; unknown keys are ignored. Undecodable: 400; invalid (negative
/// `tailLines`, `limitBytes` < 1, `sinceSeconds` < 1, both since options): 422.
pub fn parse_query(q: &str) -> Result<LogQuery, Reply> {
    let undecodable = || Reply::new(400, r#"{"message": "Unable to decode query."}"#);
    let invalid = || Reply::new(422, r#"{"message": "Invalid request."}"#);
    let mut out = LogQuery::default();
    let (mut tail, mut since_seconds, mut since_time) = (None, None, false);
    for pair in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (k, v) = (percent_decode(k), percent_decode(v));
        let int = || v.parse::<i64>().map_err(|_| undecodable());
        match k.as_str() {
            "follow" => out.follow = parse_bool(&v).ok_or_else(undecodable)?,
            "previous" => out.previous = parse_bool(&v).ok_or_else(undecodable)?,
            "timestamps" => {
                parse_bool(&v).ok_or_else(undecodable)?;
            }
            "tailLines" => tail = Some(int()?),
            "tail" if v == "all" => tail = None,
            "tail" => tail = Some(int()?),
            "limitBytes" => {
                let n = int()?;
                if n < 1 {
                    return Err(invalid());
                }
                out.limit_bytes = Some(n as u64);
            }
            "sinceSeconds" => since_seconds = Some(int()?),
            "sinceTime" => {
                chrono::DateTime::parse_from_rfc3339(&v).map_err(|_| undecodable())?;
                since_time = true;
            }
            _ => {}
        }
    }
    if let Some(t) = tail {
        if t < 0 {
            return Err(invalid());
        }
        out.tail_lines = Some(t as u64);
    }
    if since_seconds.is_some_and(|s| s < 1) || (since_seconds.is_some() && since_time) {
        return Err(invalid());
    }
    Ok(out)
}

/// Routes a request line's method and target: the log path with its query, or the reply the
/// kubelet gives (404 for other paths, 405 for other methods, 400/422 for bad queries).
pub fn parse_request(method: &str, target: &str) -> Result<LogRequest, Reply> {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let not_found = || Reply::new(404, "404 page not found\n");
    let rest = path.strip_prefix("/containerLogs/").ok_or_else(not_found)?;
    let parts: Vec<String> = rest.split('/').map(percent_decode).collect();
    let [namespace, pod, container] = parts.as_slice() else {
        return Err(not_found());
    };
    if namespace.is_empty() || pod.is_empty() || container.is_empty() {
        return Err(not_found());
    }
    if method != "GET" {
        return Err(Reply::new(405, "Method Not Allowed"));
    }
    Ok(LogRequest {
        namespace: namespace.clone(),
        pod: pod.clone(),
        container: container.clone(),
        query: parse_query(query)?,
    })
}

/// The offset where the last `n` lines of `r` start (an unterminated last line counts as a
/// line, as the container runtime's log records make it one). Reads backwards in blocks, so a
/// large log is not read whole.
pub fn tail_offset<R: Read + Seek>(r: &mut R, n: u64) -> io::Result<u64> {
    let size = r.seek(SeekFrom::End(0))?;
    if n == 0 {
        return Ok(size);
    }
    let mut end = size;
    let mut buf = vec![0u8; 64 * 1024];
    let mut found = 0;
    // The newline that ends the last line does not start a line after it.
    let mut skip_last = true;
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let block = &mut buf[..(end - start) as usize];
        r.seek(SeekFrom::Start(start))?;
        r.read_exact(block)?;
        for i in (0..block.len()).rev() {
            if skip_last {
                skip_last = false;
                if block[i] == b'\n' {
                    continue;
                }
            }
            if block[i] == b'\n' {
                found += 1;
                if found == n {
                    return Ok(start + i as u64 + 1);
                }
            }
        }
        end = start;
    }
    Ok(0)
}

/// Which of a container's two log files a request reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFile {
    /// `<container>.log`; `live`: that run is still going, so `follow` waits for more.
    Current { live: bool },
    /// `<container>.previous.log`: the run before, already over.
    Previous,
}

/// Picks the log of a container for a request, from its state (read under the same lock the
/// kubelet rotates the files under) and whether `<container>.log` exists; errors are the
/// kubelet's (`validateContainerLogStatus`, served as 400).
///
/// The kubelet moves the current log to the previous one when a run ends and the container
/// will restart, so during the back-off (not running, nothing terminated, a last termination)
/// the run that just ended is the previous file, for both plain and `previous` requests, as a
/// real kubelet serves the last terminated container then.
pub fn choose_log(
    s: &ContainerState,
    previous: bool,
    current_exists: bool,
    pod: &str,
) -> Result<LogFile, String> {
    let c = &s.name;
    if previous {
        return match s.last_terminated {
            Some(_) => Ok(LogFile::Previous),
            None => Err(format!(
                "previous terminated container {c:?} in pod {pod:?} not found"
            )),
        };
    }
    if s.running() {
        return Ok(LogFile::Current { live: true });
    }
    if s.terminated.is_some() && current_exists {
        return Ok(LogFile::Current { live: false });
    }
    if s.last_terminated.is_some() {
        return Ok(LogFile::Previous);
    }
    if s.terminated.is_some() {
        return Err(format!("container {c:?} in pod {pod:?} is terminated"));
    }
    let reason = s
        .waiting
        .as_ref()
        .map(|(r, _)| r.as_str())
        .unwrap_or("ContainerCreating");
    Err(format!(
        "container {c:?} in pod {pod:?} is waiting to start: {reason}"
    ))
}

/// `<dir>/<container>.previous.log` for `<dir>/<container>.log`.
pub fn previous_log_path(log: &Path) -> PathBuf {
    let stem = log
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    log.with_file_name(format!("{stem}.previous.log"))
}

/// A run of a container ended and it will restart: its log becomes the previous one (the one
/// before is dropped, as the kubelet keeps one terminated container), and the next run starts a
/// fresh `<container>.log`.
pub fn rotate_log(log: &Path) {
    let prev = previous_log_path(log);
    if fs::rename(log, &prev).is_err() {
        // No log (it never started): no previous run to show either.
        let _ = fs::remove_file(&prev);
    }
}

// ---------------------------------------------------------------- server

/// The TLS config of every node's log API: the `kubelet` serving cert, client certs required
/// and verified against the cluster CA.
pub(super) fn server_tls(l: &Layout) -> Result<Arc<ServerConfig>, String> {
    let err = |what: &str, e: &dyn std::fmt::Display| format!("log API TLS: {what}: {e}");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    let ca = CertificateDer::from_pem_file(l.ca_cert()).map_err(|e| err("CA cert", &e))?;
    roots.add(ca).map_err(|e| err("CA cert", &e))?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| err("client verifier", &e))?;
    let (crt, key) = l.cert_pair(pki::KUBELET);
    let certs = CertificateDer::pem_file_iter(&crt)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| err(&crt.display().to_string(), &e))?;
    let key = PrivateKeyDer::from_pem_file(&key).map_err(|e| err("kubelet key", &e))?;
    let cfg = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| err("protocol versions", &e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| err("serving cert", &e))?;
    Ok(Arc::new(cfg))
}

/// A listener on a free port of 127.0.0.1.
pub(super) async fn bind() -> io::Result<(tokio::net::TcpListener, u16)> {
    let l = tokio::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
    let port = l.local_addr()?.port();
    Ok((l, port))
}

/// The accept loop of one node's log API (runs until aborted: the node is lost, or the kubelet
/// stops). Each connection is served on its own thread.
pub(super) async fn serve(
    listener: tokio::net::TcpListener,
    tls: Arc<ServerConfig>,
    node: Arc<Node>,
) {
    loop {
        let sock = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                warn!(node = %node.name, "log API accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(sock) = sock.into_std() else { continue };
        let (tls, n) = (tls.clone(), node.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("logs-{}", node.name))
            .spawn(move || {
                if let Err(e) = handle(sock, tls, &n) {
                    debug!(node = %n.name, "log API connection: {e}");
                }
            });
        if let Err(e) = spawned {
            warn!(node = %node.name, "log API: no thread for a connection: {e}");
        }
    }
}

type Tls = StreamOwned<ServerConnection, TcpStream>;

fn handle(sock: TcpStream, tls: Arc<ServerConfig>, node: &Node) -> io::Result<()> {
    sock.set_nonblocking(false)?;
    sock.set_read_timeout(Some(Duration::from_secs(10)))?;
    sock.set_write_timeout(Some(Duration::from_secs(30)))?;
    let conn = ServerConnection::new(tls).map_err(io::Error::other)?;
    let mut s = StreamOwned::new(conn, sock);
    // The handshake happens here: no or a foreign client cert ends it.
    let head = read_head(&mut s)?;
    if node.gone() {
        return Ok(());
    }
    let mut words = head.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let res = parse_request(method, target).and_then(|r| open_log(node, &r).map(|o| (r, o)));
    match res {
        Err(r) => {
            let ct = if r.body.starts_with('{') {
                "application/json"
            } else {
                "text/plain; charset=utf-8"
            };
            write!(
                s,
                "HTTP/1.1 {} {}\r\nContent-Type: {ct}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
                r.status,
                reason(r.status),
                r.body.len(),
                r.body
            )?;
        }
        Ok((req, open)) => {
            debug!(node = %node.name, pod = %req.pod, container = %req.container, query = ?req.query, "log API");
            stream(&mut s, node, open, &req.query)?;
        }
    }
    s.conn.send_close_notify();
    s.flush()
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        422 => "Unprocessable Entity",
        _ => "Internal Server Error",
    }
}

fn read_head(s: &mut Tls) -> io::Result<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 2048];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut chunk)?;
        if n == 0 || buf.len() > MAX_HEAD {
            return Err(io::Error::other("incomplete request"));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// A log file opened for a request; `live`: the run it belongs to may still write to it.
struct OpenLog {
    file: File,
    live: Option<Live>,
}

/// The run a follow stream waits on.
struct Live {
    run: Arc<PodRun>,
    init: bool,
    idx: usize,
    pid: Option<i32>,
}

impl Live {
    fn running(&self) -> bool {
        let list = if self.init {
            &self.run.init
        } else {
            &self.run.main
        };
        let s = &list.lock().unwrap()[self.idx];
        s.running() && s.pid == self.pid
    }
}

/// Finds the pod on this node and the container in it, and opens the log the query asks for.
fn open_log(node: &Node, r: &LogRequest) -> Result<OpenLog, Reply> {
    let key = format!("{}/{}", r.namespace, r.pod);
    let run = node
        .pods
        .lock()
        .unwrap()
        .get(&key)
        .filter(|run| run.node.name == node.name)
        .cloned()
        .ok_or_else(|| Reply::new(404, format!("pod {:?} does not exist", r.pod)))?;
    let find = |init: bool| {
        let list = if init { &run.init } else { &run.main };
        let idx = list
            .lock()
            .unwrap()
            .iter()
            .position(|c| c.name == r.container);
        idx.map(|i| (init, i))
    };
    let (init, idx) = find(false).or_else(|| find(true)).ok_or_else(|| {
        Reply::new(
            404,
            format!("container {:?} not found in pod {:?}", r.container, r.pod),
        )
    })?;
    let current = run.dir.join(format!("{}.log", r.container));
    let list = if init { &run.init } else { &run.main };
    // Decide and open under the lock the kubelet rotates the files under.
    let states = list.lock().unwrap();
    let s = &states[idx];
    let choice = choose_log(s, r.query.previous, current.exists(), &r.pod)
        .map_err(|e| Reply::new(400, e))?;
    let (path, live) = match choice {
        LogFile::Current { live } => (current, live),
        LogFile::Previous => (previous_log_path(&current), false),
    };
    let pid = s.pid;
    drop(states);
    let file = File::open(&path)
        .map_err(|e| Reply::new(400, format!("failed to open log {}: {e}", path.display())))?;
    Ok(OpenLog {
        file,
        live: (live && r.query.follow).then(|| Live {
            run: run.clone(),
            init,
            idx,
            pid,
        }),
    })
}

fn write_chunk(s: &mut Tls, data: &[u8]) -> io::Result<()> {
    write!(s, "{:x}\r\n", data.len())?;
    s.write_all(data)?;
    s.write_all(b"\r\n")?;
    s.flush()
}

/// Streams the log: from the tail offset, at most `limitBytes`, then (follow, live run) new
/// bytes as they come until the run ends, the client goes away or the node is lost.
fn stream(s: &mut Tls, node: &Node, open: OpenLog, q: &LogQuery) -> io::Result<()> {
    let OpenLog { mut file, mut live } = open;
    let start = match q.tail_lines {
        Some(n) => tail_offset(&mut file, n)?,
        None => 0,
    };
    file.seek(SeekFrom::Start(start))?;
    s.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
    )?;
    s.flush()?;
    let mut left = q.limit_bytes.unwrap_or(u64::MAX);
    let mut buf = vec![0u8; 32 * 1024];
    while left > 0 {
        let want = (buf.len() as u64).min(left) as usize;
        let n = file.read(&mut buf[..want])?;
        if n > 0 {
            write_chunk(s, &buf[..n])?;
            left -= n as u64;
            continue;
        }
        let Some(l) = &live else { break };
        if node.gone() {
            // The machine is gone: the stream just breaks.
            return Err(io::Error::other("node lost"));
        }
        if !l.running() {
            // The run ended: what it wrote is all in the file now; send the rest and end.
            live = None;
            continue;
        }
        if client_gone(s) {
            return Ok(());
        }
        std::thread::sleep(FOLLOW_POLL);
    }
    s.write_all(b"0\r\n\r\n")?;
    s.flush()
}

/// Whether the client closed the connection (TCP FIN, or a TLS close_notify) while a follow
/// stream waits for output.
fn client_gone(s: &mut Tls) -> bool {
    if s.sock.set_nonblocking(true).is_err() {
        return true;
    }
    let mut b = [0u8; 1];
    let gone = match s.sock.peek(&mut b) {
        Ok(0) => true,
        Ok(_) => match s.conn.read_tls(&mut s.sock) {
            Ok(0) => true,
            Ok(_) => s
                .conn
                .process_new_packets()
                .map_or(true, |st| st.peer_has_closed()),
            Err(e) => e.kind() != io::ErrorKind::WouldBlock,
        },
        Err(e) => e.kind() != io::ErrorKind::WouldBlock,
    };
    gone || s.sock.set_nonblocking(false).is_err()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubelet::{Api, GpuAllocator, KubeletConfig, Terminated};
    use std::collections::{HashMap, HashSet};
    use std::io::Cursor;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::sync::Notify;

    #[test]
    fn query_parsing_follows_the_kubelet() {
        assert_eq!(parse_query(""), Ok(LogQuery::default()));
        assert_eq!(
            parse_query("follow=true&previous=1&tailLines=2&limitBytes=10&timestamps=true"),
            Ok(LogQuery {
                follow: true,
                previous: true,
                tail_lines: Some(2),
                limit_bytes: Some(10),
            })
        );
        assert_eq!(parse_query("tail=5").unwrap().tail_lines, Some(5));
        assert_eq!(
            parse_query("tailLines=5&tail=all").unwrap().tail_lines,
            None
        );
        assert!(parse_query("follow").unwrap().follow);
        assert_eq!(
            parse_query("follow=false&x=y").unwrap(),
            LogQuery::default()
        );
        assert!(
            parse_query("sinceTime=2024-01-02T03%3A04%3A05Z&sinceSeconds=0")
                .is_err_and(|r| r.status == 422)
        );
        assert!(parse_query("sinceTime=2024-01-02T03%3A04%3A05Z").is_ok());
        assert!(parse_query("sinceTime=yesterday").is_err_and(|r| r.status == 400));
        assert!(parse_query("tailLines=-1").is_err_and(|r| r.status == 422));
        assert!(parse_query("limitBytes=0").is_err_and(|r| r.status == 422));
        assert!(parse_query("tailLines=x").is_err_and(|r| r.status == 400));
        assert!(parse_query("follow=maybe").is_err_and(|r| r.status == 400));
    }

    #[test]
    fn request_routing() {
        let r = parse_request("GET", "/containerLogs/ns/p-0/main?follow=true").unwrap();
        assert_eq!(
            (r.namespace.as_str(), r.pod.as_str(), r.container.as_str()),
            ("ns", "p-0", "main")
        );
        assert!(r.query.follow);
        for bad in [
            "/containerLogs/ns/p",
            "/containerLogs/ns/p/c/x",
            "/containerLogs/ns//c",
            "/pods",
            "/",
        ] {
            assert_eq!(parse_request("GET", bad).unwrap_err().status, 404, "{bad}");
        }
        assert_eq!(
            parse_request("POST", "/containerLogs/a/b/c")
                .unwrap_err()
                .status,
            405
        );
        assert_eq!(percent_decode("a%2Fb+c%zz"), "a/b c%zz");
    }

    fn tail(s: &str, n: u64) -> String {
        let mut c = Cursor::new(s.as_bytes().to_vec());
        let off = tail_offset(&mut c, n).unwrap() as usize;
        s[off..].to_string()
    }

    #[test]
    fn tail_counts_lines_from_the_end() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc\n");
        assert_eq!(tail("a\nb\nc\n", 1), "c\n");
        assert_eq!(tail("a\nb\nc\n", 3), "a\nb\nc\n");
        assert_eq!(tail("a\nb\nc\n", 9), "a\nb\nc\n");
        assert_eq!(tail("a\nb\nc\n", 0), "");
        // An unterminated last line is a line.
        assert_eq!(tail("a\nb\nc", 1), "c");
        assert_eq!(tail("a\nb\nc", 2), "b\nc");
        // Empty lines count.
        assert_eq!(tail("a\n\n\n", 2), "\n\n");
        assert_eq!(tail("", 3), "");
        assert_eq!(tail("\n", 1), "\n");
        // Across the 64 KiB blocks.
        let big: String = (0..30000).map(|i| format!("line {i}\n")).collect();
        assert_eq!(tail(&big, 2), "line 29998\nline 29999\n");
        assert_eq!(tail(&big, 30000), big);
        assert_eq!(tail(&big, 20000).lines().next(), Some("line 10000"));
    }

    fn term(code: i32) -> Terminated {
        Terminated {
            exit_code: code,
            signal: None,
            reason: "Error".into(),
            message: String::new(),
            started_at: String::new(),
            finished_at: String::new(),
        }
    }

    #[test]
    fn log_choice_follows_the_container_state() {
        let c = |pid, terminated, last, waiting: Option<&str>| ContainerState {
            name: "c".into(),
            pid,
            terminated,
            last_terminated: last,
            waiting: waiting.map(|w| (w.to_string(), String::new())),
            ..Default::default()
        };
        let cur = |live| Ok(LogFile::Current { live });
        // Running, first run.
        let s = c(Some(5), None, None, None);
        assert_eq!(choose_log(&s, false, true, "p"), cur(true));
        assert_eq!(
            choose_log(&s, true, true, "p"),
            Err(r#"previous terminated container "c" in pod "p" not found"#.into())
        );
        // Finished.
        let s = c(Some(5), Some(term(0)), None, None);
        assert_eq!(choose_log(&s, false, true, "p"), cur(false));
        // In back-off after a failed run: that run's log is the previous file now.
        let s = c(None, None, Some(term(1)), Some("CrashLoopBackOff"));
        assert_eq!(choose_log(&s, false, false, "p"), Ok(LogFile::Previous));
        assert_eq!(choose_log(&s, true, false, "p"), Ok(LogFile::Previous));
        // Restarted and running again / finished after a restart.
        let s = c(Some(6), None, Some(term(1)), None);
        assert_eq!(choose_log(&s, false, true, "p"), cur(true));
        assert_eq!(choose_log(&s, true, true, "p"), Ok(LogFile::Previous));
        let s = c(Some(6), Some(term(0)), Some(term(1)), None);
        assert_eq!(choose_log(&s, false, true, "p"), cur(false));
        assert_eq!(choose_log(&s, true, true, "p"), Ok(LogFile::Previous));
        // Stopped during a back-off: the last run is the previous file.
        let s = c(None, Some(term(1)), Some(term(1)), None);
        assert_eq!(choose_log(&s, false, false, "p"), Ok(LogFile::Previous));
        // Never ran.
        let s = c(None, Some(term(128)), None, None);
        assert_eq!(
            choose_log(&s, false, false, "p"),
            Err(r#"container "c" in pod "p" is terminated"#.into())
        );
        let s = c(None, None, None, Some("CreateContainerConfigError"));
        assert_eq!(
            choose_log(&s, false, false, "p"),
            Err(
                r#"container "c" in pod "p" is waiting to start: CreateContainerConfigError"#
                    .into()
            )
        );
        let s = c(None, None, None, None);
        assert!(
            choose_log(&s, false, false, "p")
                .unwrap_err()
                .ends_with("waiting to start: ContainerCreating")
        );
    }

    #[test]
    fn rotation_keeps_one_previous_run() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("main.log");
        let prev = previous_log_path(&log);
        assert_eq!(prev, d.path().join("main.previous.log"));
        fs::write(&log, "run 1\n").unwrap();
        rotate_log(&log);
        assert!(!log.exists());
        assert_eq!(fs::read_to_string(&prev).unwrap(), "run 1\n");
        fs::write(&log, "run 2\n").unwrap();
        rotate_log(&log);
        assert_eq!(fs::read_to_string(&prev).unwrap(), "run 2\n");
        // A run that never started leaves no previous log.
        rotate_log(&log);
        assert!(!prev.exists());
    }

    // --- the server, over real TLS, with a node and a pod built by hand

    fn client(l: &Layout, with_cert: bool) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_file(l.ca_cert()).unwrap())
            .unwrap();
        let b = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
        let cfg = if with_cert {
            let (c, k) = l.cert_pair("apiserver-kubelet-client");
            b.with_client_auth_cert(
                vec![CertificateDer::from_pem_file(c).unwrap()],
                PrivateKeyDer::from_pem_file(k).unwrap(),
            )
            .unwrap()
        } else {
            b.with_no_client_auth()
        };
        Arc::new(cfg)
    }

    fn test_node(dir: &Path, tls: Arc<rustls::ClientConfig>, port: u16) -> Arc<Node> {
        Arc::new(Node {
            name: "node-0".into(),
            api: Api {
                addr: "127.0.0.1:1".parse().unwrap(),
                tls,
                token: String::new(),
            },
            cfg: Arc::new(KubeletConfig::default()),
            gpus: Mutex::new(GpuAllocator::new(0)),
            pods_dir: dir.to_path_buf(),
            pgids: Arc::new(Mutex::new(HashSet::new())),
            shutting_down: Arc::new(AtomicBool::new(false)),
            registered_at: String::new(),
            net: None,
            lost: AtomicBool::new(false),
            pods: Arc::new(Mutex::new(HashMap::new())),
            log_port: port,
            log_server: Mutex::new(None),
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn serves_logs_over_mutual_tls() {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = crate::ClusterConfig::new(tmp.path().join("c"), "/nonexistent").unwrap();
        pki::ensure(&cfg).unwrap();
        let l = cfg.layout();
        let (admin, anonymous) = (client(&l, true), client(&l, false));
        let (listener, port) = bind().await.unwrap();
        let node = test_node(tmp.path(), admin.clone(), port);
        let dir = tmp.path().join("uid-1");
        fs::create_dir_all(&dir).unwrap();
        let state = |name: &str, pid, terminated, last| ContainerState {
            name: name.into(),
            pid,
            terminated,
            last_terminated: last,
            ..Default::default()
        };
        let run = Arc::new(PodRun {
            node: node.clone(),
            pod: serde_json::json!({}),
            dir: dir.clone(),
            gpus: vec![],
            init: Mutex::new(vec![state("init", Some(1), Some(term(0)), None)]),
            main: Mutex::new(vec![
                state("live", Some(std::process::id() as i32), None, None),
                state("done", Some(2), Some(term(0)), Some(term(1))),
            ]),
            changed: Notify::new(),
            start_time: String::new(),
            transitions: Mutex::new(HashMap::new()),
            net: None,
        });
        fs::write(dir.join("init.log"), "init ran\n").unwrap();
        fs::write(dir.join("live.log"), "one\n").unwrap();
        fs::write(dir.join("done.log"), "a\nb\nc\nd\n").unwrap();
        fs::write(dir.join("done.previous.log"), "failed run\n").unwrap();
        node.pods.lock().unwrap().insert("ns/p".into(), run.clone());
        let server = tokio::spawn(serve(listener, server_tls(&l).unwrap(), node.clone()));

        let get = |path: &str, tls: &Arc<rustls::ClientConfig>| {
            let (path, tls) = (path.to_string(), tls.clone());
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
            tokio::task::spawn_blocking(move || {
                crate::probe::request(addr, "GET", &path, Some(&tls), None, None)
            })
        };
        let ok = |s: &str| Ok((200, s.to_string()));
        let base = "/containerLogs/ns/p";
        assert_eq!(
            get(&format!("{base}/done"), &admin).await.unwrap(),
            ok("a\nb\nc\nd\n")
        );
        assert_eq!(
            get(&format!("{base}/done?tailLines=2"), &admin)
                .await
                .unwrap(),
            ok("c\nd\n")
        );
        assert_eq!(
            get(&format!("{base}/done?tailLines=3&limitBytes=3"), &admin)
                .await
                .unwrap(),
            ok("b\nc")
        );
        assert_eq!(
            get(&format!("{base}/done?previous=true"), &admin)
                .await
                .unwrap(),
            ok("failed run\n")
        );
        assert_eq!(
            get(&format!("{base}/init"), &admin).await.unwrap(),
            ok("init ran\n")
        );
        assert_eq!(
            get(&format!("{base}/live?previous=true"), &admin)
                .await
                .unwrap(),
            Ok((
                400,
                r#"previous terminated container "live" in pod "p" not found"#.into()
            ))
        );
        assert_eq!(
            get("/containerLogs/ns/nope/done", &admin).await.unwrap(),
            Ok((404, r#"pod "nope" does not exist"#.into()))
        );
        assert_eq!(
            get(&format!("{base}/zz"), &admin).await.unwrap(),
            Ok((404, r#"container "zz" not found in pod "p""#.into()))
        );
        assert_eq!(
            get(&format!("{base}/done?tailLines=-2"), &admin)
                .await
                .unwrap()
                .map(|r| r.0),
            Ok(422)
        );
        // Without a client cert there is no response at all.
        let r = get(&format!("{base}/done"), &anonymous).await.unwrap();
        assert!(r.is_err(), "{r:?}");

        // follow: what is there, what is appended, and the end when the run ends.
        let t0 = std::time::Instant::now();
        let follow = get(&format!("{base}/live?follow=true"), &admin);
        let r = run.clone();
        let writer = tokio::task::spawn_blocking(move || {
            std::thread::sleep(Duration::from_millis(300));
            let mut f = fs::OpenOptions::new()
                .append(true)
                .open(r.dir.join("live.log"))
                .unwrap();
            f.write_all(b"two\n").unwrap();
            std::thread::sleep(Duration::from_millis(300));
            f.write_all(b"three\n").unwrap();
            r.update_container(false, 0, |s| s.terminated = Some(term(0)));
        });
        assert_eq!(follow.await.unwrap(), ok("one\ntwo\nthree\n"));
        assert!(t0.elapsed() >= Duration::from_millis(600));
        writer.await.unwrap();
        // A finished run: follow returns at once.
        assert_eq!(
            get(&format!("{base}/live?follow=true"), &admin)
                .await
                .unwrap(),
            ok("one\ntwo\nthree\n")
        );

        // A lost node serves nothing (here: the flag; Faults::lose_node also stops the loop).
        node.lost.store(true, Ordering::SeqCst);
        assert!(get(&format!("{base}/done"), &admin).await.unwrap().is_err());
        server.abort();
    }
}
