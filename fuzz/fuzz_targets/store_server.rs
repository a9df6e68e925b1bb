//! The store server (launcher/src/store/server.rs) serving arbitrary bytes as one client
//! connection: it never panics (a panic in any of its tasks aborts the process: libfuzzer-sys's
//! panic hook), closes the connection once the client is done, and then still answers a
//! well-behaved client (VALIDATE, SET, GET, PING) correctly.
//!
//! One server per fuzz process (a tokio runtime with one worker thread), replaced every
//! `ROTATE` inputs so what earlier inputs stored stays small. It is a job's store
//! (`ServerConfig::for_agents`, token `fuzz-token`), so the launcher-key checks run too.
//! Input: the bytes the hostile client sends, all at once, then it half-closes.

#![no_main]

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use elastic_launch::store::codec::{self, Reply, ReplyShape, Request, VALIDATION_MAGIC};
use elastic_launch::store::{AgentToken, ServerConfig, StoreServer};
use libfuzzer_sys::fuzz_target;
use tokio::runtime::Runtime;

/// Inputs served by one server before it is replaced.
const ROTATE: u32 = 256;
/// How long the server may take to close a finished connection or to answer the probe.
const PATIENCE: Duration = Duration::from_secs(10);

struct Fixture {
    runtime: Runtime,
    server: Mutex<(StoreServer, u32)>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        // A write to a socket the server closed must be an error here, not SIGPIPE (libFuzzer's
        // main, not Rust's, runs this process, so std did not ignore SIGPIPE).
        #[allow(unsafe_code)]
        // SAFETY: setting a signal's disposition to SIG_IGN has no preconditions.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let server = start(&runtime);
        Fixture {
            runtime,
            server: Mutex::new((server, 0)),
        }
    })
}

fn start(runtime: &Runtime) -> StoreServer {
    let config = ServerConfig::for_agents(&AgentToken::new("fuzz-token"));
    StoreServer::bind_on(runtime.handle(), "127.0.0.1", 0, config).expect("store server")
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connecting to the store server");
    stream.set_nodelay(true).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.set_write_timeout(Some(PATIENCE)).unwrap();
    stream
}

fuzz_target!(|data: &[u8]| {
    let fixture = fixture();
    let addr = {
        let mut server = fixture.server.lock().unwrap();
        server.1 += 1;
        if server.1 > ROTATE {
            *server = (start(&fixture.runtime), 1);
        }
        server.0.local_addr()
    };

    // The hostile client: everything at once, then EOF; the server must close its end.
    let mut hostile = connect(addr);
    // The server may close before reading everything (that is its answer to bad bytes).
    let _ = hostile.write_all(data);
    let _ = hostile.shutdown(Shutdown::Write);
    let mut sink = [0u8; 64 * 1024];
    loop {
        match hostile.read(&mut sink) {
            Ok(0) => break,
            Ok(_) => {}
            // libFuzzer's timers (SIGALRM) interrupt blocking reads.
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("the server kept a finished connection open for {PATIENCE:?}")
            }
            // Reset: the server closed with unread bytes (a refused request).
            Err(_) => break,
        }
    }
    drop(hostile);

    probe(addr);
});

/// A well-behaved client gets correct answers.
fn probe(addr: SocketAddr) {
    let mut s = connect(addr);
    let value = b"probe value";
    let mut out = Vec::new();
    Request::Validate {
        magic: VALIDATION_MAGIC,
    }
    .encode(&mut out);
    Request::Set {
        key: b"/fuzz/probe",
        value,
    }
    .encode(&mut out);
    Request::Get {
        key: b"/fuzz/probe",
    }
    .encode(&mut out);
    Request::Ping { nonce: 0x5eed }.encode(&mut out);
    s.write_all(&out).expect("sending the probe");

    let mut buf = Vec::new();
    let mut read_reply = |shape| loop {
        if let Some((reply, n)) = codec::decode_reply(shape, &buf).expect("a valid reply") {
            buf.drain(..n);
            return reply;
        }
        let mut chunk = [0u8; 4096];
        match s.read(&mut chunk) {
            Ok(0) => panic!("the server closed the probe's connection"),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("the server did not answer the probe: {e}"),
        }
    };
    assert_eq!(read_reply(ReplyShape::Bytes), Reply::Bytes(value.to_vec()));
    assert_eq!(read_reply(ReplyShape::U32), Reply::U32(0x5eed));
}
