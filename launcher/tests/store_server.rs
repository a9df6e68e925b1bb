//! Our store client against our store server over real TCP: every command, the waiting
//! semantics (wake-ups, cancel, barrier, queues, disconnecting waiters) and hostile connections.
//! Raw sockets are used where the exact bytes on the wire matter.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use elastic_launch::store::codec::{self, Reply, ReplyShape, Request, VALIDATION_MAGIC};
use elastic_launch::store::{
    AgentToken, Connector, Limits, ServerConfig, StoreClient, StoreError, StoreServer,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const T: Duration = Duration::from_secs(5);
/// How long a test waits to be sure something has NOT happened (a blocked wait stays blocked).
const QUIET: Duration = Duration::from_millis(150);

async fn server() -> StoreServer {
    StoreServer::bind("127.0.0.1", 0).unwrap()
}

async fn client(s: &StoreServer) -> StoreClient {
    StoreClient::connect("127.0.0.1", s.port(), T)
        .await
        .unwrap()
}

/// A raw, validated connection for byte-exact checks.
struct Raw {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    async fn connect(addr: SocketAddr) -> Raw {
        let stream = TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        Raw {
            stream,
            buf: Vec::new(),
        }
    }

    async fn validated(addr: SocketAddr) -> Raw {
        let mut raw = Raw::connect(addr).await;
        raw.send(&Request::Validate {
            magic: VALIDATION_MAGIC,
        })
        .await;
        raw
    }

    async fn send(&mut self, req: &Request<'_>) {
        self.stream.write_all(&req.to_bytes()).await.unwrap();
    }

    async fn reply(&mut self, shape: ReplyShape) -> Reply {
        tokio::time::timeout(T, async {
            loop {
                if let Some((reply, n)) = codec::decode_reply(shape, &self.buf).unwrap() {
                    self.buf.drain(..n);
                    return reply;
                }
                let n = self.stream.read_buf(&mut self.buf).await.unwrap();
                assert!(
                    n > 0,
                    "server closed the connection while a reply was expected"
                );
            }
        })
        .await
        .expect("no reply in time")
    }

    async fn u8(&mut self) -> u8 {
        match self.reply(ReplyShape::U8).await {
            Reply::U8(v) => v,
            other => panic!("{other:?}"),
        }
    }

    /// Nothing arrives within QUIET.
    async fn assert_silent(&mut self) {
        assert!(
            self.buf.is_empty(),
            "unexpected buffered bytes {:?}",
            self.buf
        );
        let mut byte = [0u8; 1];
        if let Ok(r) = tokio::time::timeout(QUIET, self.stream.read(&mut byte)).await {
            panic!("expected silence, read {r:?} {byte:?}");
        }
    }

    /// The server closes the connection (EOF or reset) promptly.
    async fn assert_closed(&mut self) {
        assert!(
            closed_within(&mut self.stream, T).await,
            "server did not close the connection"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_value_commands() {
    let s = server().await;
    let c = client(&s).await;
    c.ping().await.unwrap();

    c.set("a", b"1").await.unwrap();
    assert_eq!(c.get("a").await.unwrap(), b"1");
    c.set("a", b"overwritten").await.unwrap();
    assert_eq!(c.get("a").await.unwrap(), b"overwritten");

    assert_eq!(c.add("n", 5).await.unwrap(), 5);
    assert_eq!(c.add("n", -7).await.unwrap(), -2);
    assert_eq!(c.get("n").await.unwrap(), b"-2", "ADD stores ASCII decimal");

    // COMPARE_SET, every branch.
    assert_eq!(
        c.compare_set("cas", b"", b"first").await.unwrap(),
        b"first",
        "absent + empty expected: stored"
    );
    assert_eq!(
        c.compare_set("cas2", b"x", b"y").await.unwrap(),
        b"x",
        "absent + non-empty expected: returns expected"
    );
    assert!(!c.check(&["cas2"]).await.unwrap(), "... and writes nothing");
    assert_eq!(
        c.compare_set("cas", b"first", b"second").await.unwrap(),
        b"second",
        "match: replaced"
    );
    assert_eq!(
        c.compare_set("cas", b"wrong", b"third").await.unwrap(),
        b"second",
        "mismatch: current value"
    );

    assert!(c.check(&["a", "n"]).await.unwrap());
    assert!(!c.check(&["a", "missing"]).await.unwrap());
    assert!(c.check(&[]).await.unwrap());

    c.append("log", b"ab").await.unwrap();
    c.append("log", b"cd").await.unwrap();
    assert_eq!(c.get("log").await.unwrap(), b"abcd");

    c.multi_set([("m1", b"x".as_slice()), ("m2", b"".as_slice())])
        .await
        .unwrap();
    assert_eq!(
        c.multi_get(&["m1", "m2", "a"]).await.unwrap(),
        vec![b"x".to_vec(), vec![], b"overwritten".to_vec()]
    );

    // a, n, cas, log, m1, m2
    assert_eq!(c.num_keys().await.unwrap(), 6);
    assert!(c.delete_key("m2").await.unwrap());
    assert!(!c.delete_key("m2").await.unwrap());
    assert_eq!(c.num_keys().await.unwrap(), 5);
    let mut keys = c.list_keys().await.unwrap();
    keys.sort();
    assert_eq!(keys, ["a", "cas", "log", "m1", "n"]);

    // A value well above one TCP segment, split and reassembled.
    let big: Vec<u8> = (0..1_000_000u32).map(|i| i as u8).collect();
    c.set("big", &big).await.unwrap();
    assert_eq!(c.get("big").await.unwrap(), big);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_of_missing_key_on_the_wire_is_empty() {
    let s = server().await;
    let mut raw = Raw::validated(s.local_addr()).await;
    raw.send(&Request::Get { key: b"/nope" }).await;
    assert_eq!(raw.reply(ReplyShape::Bytes).await, Reply::Bytes(vec![]));
    raw.send(&Request::MultiGet {
        keys: vec![b"/nope", b"/nope2"],
    })
    .await;
    assert_eq!(
        raw.reply(ReplyShape::BytesN(2)).await,
        Reply::BytesN(vec![vec![], vec![]])
    );
    raw.send(&Request::Ping { nonce: 0xABCD }).await;
    assert_eq!(raw.reply(ReplyShape::U32).await, Reply::U32(0xABCD));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_prefixes_and_the_init_key_on_the_wire() {
    let s = server().await;
    let c = client(&s).await;
    c.set("plain", b"1").await.unwrap();
    let p = c.prefixed("worker/attempt_0");
    p.set("k", b"2").await.unwrap();
    p.prefixed("default_pg").set("k", b"3").await.unwrap();
    c.add("init/", 1).await.unwrap();
    p.add("init/", 1).await.unwrap();

    let mut raw = Raw::validated(s.local_addr()).await;
    raw.send(&Request::ListKeys).await;
    let Reply::KeyList(mut wire) = raw.reply(ReplyShape::KeyList).await else {
        panic!()
    };
    wire.sort();
    let wire: Vec<String> = wire
        .into_iter()
        .map(|k| String::from_utf8(k).unwrap())
        .collect();
    assert_eq!(
        wire,
        [
            "/plain",
            "/worker/attempt_0/default_pg/k",
            "/worker/attempt_0/init/",
            "/worker/attempt_0/k",
            "init/"
        ]
    );
    assert_eq!(
        c.num_keys().await.unwrap(),
        5,
        "GETNUMKEYS counts init/ too"
    );

    let mut plain = c.list_keys().await.unwrap();
    plain.sort();
    assert_eq!(
        plain.len(),
        4,
        "TCPStore drops keys without its '/': {plain:?}"
    );
    let mut scoped = p.list_keys().await.unwrap();
    scoped.sort();
    assert_eq!(scoped, ["default_pg/k", "init/", "k"]);
    assert_eq!(c.get("worker/attempt_0/default_pg/k").await.unwrap(), b"3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_is_released_when_the_last_missing_key_appears() {
    let s = server().await;
    let writer = client(&s).await;
    writer.set("present", b"x").await.unwrap();

    let mut waiter = Raw::validated(s.local_addr()).await;
    waiter
        .send(&Request::Wait {
            keys: vec![b"/present"],
        })
        .await;
    assert_eq!(
        waiter.u8().await,
        codec::STOP_WAITING,
        "all keys present: immediate"
    );

    waiter
        .send(&Request::Wait {
            keys: vec![b"/present", b"/a", b"/b"],
        })
        .await;
    waiter.assert_silent().await;
    writer.set("a", b"1").await.unwrap();
    writer.ping().await.unwrap(); // the SET has been applied
    waiter.assert_silent().await;
    // Every kind of write counts as the key appearing.
    writer.add("b", 1).await.unwrap();
    assert_eq!(waiter.u8().await, codec::STOP_WAITING);

    for (i, op) in ["append", "compare_set", "multi_set"]
        .into_iter()
        .enumerate()
    {
        let key = format!("k{i}");
        waiter
            .send(&Request::Wait {
                keys: vec![format!("/{key}").as_bytes()],
            })
            .await;
        waiter.assert_silent().await;
        match op {
            "append" => writer.append(&key, b"x").await.unwrap(),
            "compare_set" => {
                writer.compare_set(&key, b"", b"x").await.unwrap();
            }
            _ => writer
                .multi_set([(key.as_str(), b"x".as_slice())])
                .await
                .unwrap(),
        }
        assert_eq!(waiter.u8().await, codec::STOP_WAITING, "{op} wakes waiters");
    }

    // DELETE_KEY wakes nobody.
    waiter
        .send(&Request::Wait {
            keys: vec![b"/del"],
        })
        .await;
    writer.delete_key("del").await.unwrap();
    waiter.assert_silent().await;
    writer.set("del", b"now").await.unwrap();
    assert_eq!(waiter.u8().await, codec::STOP_WAITING);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_waiters_on_one_key_all_wake_and_their_next_replies_follow_in_order() {
    let s = server().await;
    let writer = client(&s).await;
    let mut waiters = Vec::new();
    for _ in 0..3 {
        let mut w = Raw::validated(s.local_addr()).await;
        // WAIT then a pipelined PING: the PING is answered at once, the STOP_WAITING later
        // (as in torch's libuv server); nothing else may appear in between.
        w.send(&Request::Wait { keys: vec![b"/go"] }).await;
        w.send(&Request::Ping { nonce: 7 }).await;
        assert_eq!(w.reply(ReplyShape::U32).await, Reply::U32(7));
        waiters.push(w);
    }
    for w in &mut waiters {
        w.assert_silent().await;
    }
    writer.set("go", b"1").await.unwrap();
    for w in &mut waiters {
        assert_eq!(w.u8().await, codec::STOP_WAITING);
        w.send(&Request::Get { key: b"/go" }).await;
        assert_eq!(
            w.reply(ReplyShape::Bytes).await,
            Reply::Bytes(b"1".to_vec())
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_wait_after_release_sends_stop_waiting_then_wait_canceled() {
    let s = server().await;
    let writer = client(&s).await;
    let mut w = Raw::validated(s.local_addr()).await;

    // Not released: only WAIT_CANCELED.
    w.send(&Request::Wait { keys: vec![b"/x"] }).await;
    w.send(&Request::CancelWait).await;
    assert_eq!(w.u8().await, codec::WAIT_CANCELED);
    // The registration is gone: a later SET sends nothing.
    writer.set("x", b"1").await.unwrap();
    writer.ping().await.unwrap();
    w.assert_silent().await;

    // Released before the cancel arrives: STOP_WAITING first, then WAIT_CANCELED.
    w.send(&Request::Wait { keys: vec![b"/y"] }).await;
    // Hold the released byte on our side: read nothing until the cancel is sent.
    writer.set("y", b"1").await.unwrap();
    writer.ping().await.unwrap();
    w.send(&Request::CancelWait).await;
    assert_eq!(w.u8().await, codec::STOP_WAITING);
    assert_eq!(w.u8().await, codec::WAIT_CANCELED);
    w.send(&Request::Ping { nonce: 9 }).await;
    assert_eq!(
        w.reply(ReplyShape::U32).await,
        Reply::U32(9),
        "nothing stray after the cancel"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_wait_timeout_names_the_keys_and_leaves_the_connection_usable() {
    let s = server().await;
    let c = client(&s).await;
    let other = client(&s).await;
    let err = c
        .wait(&["never", "nor_this"], Duration::from_millis(100))
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("/never, /nor_this") && msg.contains("100ms"),
        "{msg}"
    );

    // The server dropped the registration, so this set must not leave a stray STOP_WAITING
    // that the next reply would be confused with.
    other.set("never", b"1").await.unwrap();
    other.set("nor_this", b"1").await.unwrap();
    other.ping().await.unwrap();
    c.set("after", b"ok").await.unwrap();
    assert_eq!(c.get("after").await.unwrap(), b"ok");
    assert_eq!(c.add("ctr", 3).await.unwrap(), 3);

    // get of a missing key times out with the client's timeout, also naming the key.
    let short = c.with_timeout(Duration::from_millis(50));
    let err = short.get("absent").await.unwrap_err();
    assert!(err.to_string().contains("/absent"), "{err}");
    assert_eq!(c.get("after").await.unwrap(), b"ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_waits_for_a_key_set_by_another_client() {
    let s = server().await;
    let c = client(&s).await;
    let other = client(&s).await;
    let pending = tokio::spawn(async move { c.get("late").await });
    tokio::time::sleep(QUIET).await;
    assert!(!pending.is_finished());
    other.set("late", b"here").await.unwrap();
    assert_eq!(
        tokio::time::timeout(T, pending)
            .await
            .unwrap()
            .unwrap()
            .unwrap(),
        b"here"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn barrier_releases_everyone_at_world_size() {
    let s = server().await;
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let c = client(&s).await;
        tasks.push(tokio::spawn(async move { c.barrier("bar", 3, T).await }));
    }
    tokio::time::sleep(QUIET).await;
    assert!(
        tasks.iter().all(|t| !t.is_finished()),
        "released before world_size arrived"
    );
    let last = client(&s).await;
    last.barrier("bar", 3, T).await.unwrap();
    for t in tasks {
        tokio::time::timeout(T, t).await.unwrap().unwrap().unwrap();
    }
    assert_eq!(
        last.get("bar").await.unwrap(),
        b"3",
        "the counter is a decimal string"
    );

    // Timeout: cancelled, reported with the key, connection still usable.
    let err = last
        .barrier("lonely", 2, Duration::from_millis(80))
        .await
        .unwrap_err();
    assert!(
        err.is_timeout() && err.to_string().contains("/lonely"),
        "{err}"
    );
    assert_eq!(
        last.get("lonely").await.unwrap(),
        b"1",
        "the arrival still counted"
    );
    last.ping().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_are_fifo_separate_from_keys_and_a_push_wakes_one_popper() {
    let s = server().await;
    let c = client(&s).await;
    c.queue_push("q", b"first").await.unwrap();
    c.queue_push("q", b"second").await.unwrap();
    assert_eq!(c.queue_len("q").await.unwrap(), 2);
    assert_eq!(c.num_keys().await.unwrap(), 0, "queues are not keys");
    assert!(
        c.check(&["q"]).await.unwrap(),
        "a non-empty queue counts for CHECK"
    );
    assert_eq!(c.queue_pop("q", false).await.unwrap().unwrap(), b"first");

    // The wire reply carries the length before the pop.
    let mut raw = Raw::validated(s.local_addr()).await;
    raw.send(&Request::QueuePop { key: b"/q" }).await;
    assert_eq!(
        raw.reply(ReplyShape::QueuePop).await,
        Reply::QueuePop {
            len_before: 1,
            value: Some(b"second".to_vec())
        }
    );
    raw.send(&Request::QueuePop { key: b"/q" }).await;
    assert_eq!(
        raw.reply(ReplyShape::QueuePop).await,
        Reply::QueuePop {
            len_before: 0,
            value: None
        }
    );
    assert_eq!(c.queue_pop("q", false).await.unwrap(), None);
    assert!(!c.check(&["q"]).await.unwrap());

    // Two blocked poppers, one push: exactly one wakes.
    let mut poppers = Vec::new();
    for _ in 0..2 {
        let p = client(&s).await;
        poppers.push(tokio::spawn(async move { p.queue_pop("jobs", true).await }));
    }
    tokio::time::sleep(QUIET).await;
    c.queue_push("jobs", b"one").await.unwrap();
    let released = tokio::time::timeout(T, async {
        loop {
            if let Some(i) = poppers.iter().position(|t| t.is_finished()) {
                return i;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap();
    assert_eq!(
        poppers.remove(released).await.unwrap().unwrap().unwrap(),
        b"one"
    );
    tokio::time::sleep(QUIET).await;
    assert!(!poppers[0].is_finished(), "one push released two poppers");
    c.queue_push("jobs", b"two").await.unwrap();
    let second = poppers.pop().unwrap();
    assert_eq!(
        tokio::time::timeout(T, second)
            .await
            .unwrap()
            .unwrap()
            .unwrap()
            .unwrap(),
        b"two"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnecting_waiter_is_forgotten() {
    let s = server().await;
    let c = client(&s).await;
    let mut gone = Raw::validated(s.local_addr()).await;
    gone.send(&Request::Wait { keys: vec![b"/k"] }).await;
    gone.send(&Request::Barrier {
        key: b"/b",
        world_size: 5,
    })
    .await;
    let mut stays = Raw::validated(s.local_addr()).await;
    stays.send(&Request::Wait { keys: vec![b"/k"] }).await;
    drop(gone);
    // Make sure the server has seen the disconnect before the key appears.
    c.ping().await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    c.set("k", b"v").await.unwrap();
    assert_eq!(stays.u8().await, codec::STOP_WAITING);
    assert_eq!(c.get("k").await.unwrap(), b"v");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_on_a_non_numeric_value_closes_only_that_connection() {
    let s = server().await;
    let c = client(&s).await;
    let bystander = client(&s).await;
    c.set("text", b"hello").await.unwrap();
    c.set("num", b" 41trailing").await.unwrap();
    assert_eq!(c.add("num", 1).await.unwrap(), 42, "parsed like std::stoll");
    let err = c.add("text", 1).await.unwrap_err();
    assert!(err.is_connection_lost(), "{err:?}");
    assert!(err.to_string().contains("127.0.0.1"), "{err}");
    let again = c.ping().await.unwrap_err();
    assert!(
        again.is_connection_lost(),
        "a broken client fails fast: {again:?}"
    );
    assert_eq!(bystander.get("text").await.unwrap(), b"hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packed_and_byte_by_byte_requests() {
    let s = server().await;
    let mut raw = Raw::validated(s.local_addr()).await;
    let mut wire = Vec::new();
    for i in 0..50u8 {
        Request::Set {
            key: format!("/k{i}").as_bytes(),
            value: &[i],
        }
        .encode(&mut wire);
        Request::Get {
            key: format!("/k{i}").as_bytes(),
        }
        .encode(&mut wire);
    }
    raw.stream.write_all(&wire).await.unwrap();
    for i in 0..50u8 {
        assert_eq!(raw.reply(ReplyShape::Bytes).await, Reply::Bytes(vec![i]));
    }
    // One request dribbled a byte at a time.
    let req = Request::Add {
        key: b"/slow",
        delta: 11,
    }
    .to_bytes();
    for b in req {
        raw.stream.write_all(&[b]).await.unwrap();
        raw.stream.flush().await.unwrap();
    }
    assert_eq!(raw.reply(ReplyShape::I64).await, Reply::I64(11));
}

/// Captures tracing output of the current thread (the tests using it run on a current-thread
/// runtime, so the server's tasks log there too).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

/// Every test's logs, from every thread: the server's tasks run on runtime threads, and a
/// thread-scoped subscriber misses events whose callsite another test's thread saw first.
/// Tests find their own lines by what is unique to them (a peer address, a size).
fn captured_logs() -> &'static Captured {
    static LOGS: std::sync::OnceLock<Captured> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(logs.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("the only global subscriber");
        logs
    })
}

#[tokio::test]
async fn hostile_connections_are_closed_and_logged_while_a_good_client_carries_on() {
    let logs = captured_logs();

    let s = server().await;
    let addr = s.local_addr();
    let good = client(&s).await;
    let mut round = 0i64;
    let mut check_good = async || {
        round += 1;
        good.set("good", round.to_string()).await.unwrap();
        assert_eq!(
            good.get("good").await.unwrap(),
            round.to_string().as_bytes()
        );
        assert_eq!(good.add("count", 1).await.unwrap(), round);
    };
    check_good().await;

    // A connection that sends nothing (within its time to validate) harms nobody.
    let mut idle = Raw::connect(addr).await;

    let mut peers = Vec::new();
    let hostile: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "wrong magic",
            vec![0, 0xEF, 0xBE, 0xAD, 0xDE],
            "VALIDATE magic is 0xdeadbeef",
        ),
        (
            "no VALIDATE first",
            Request::Get { key: b"/good" }.to_bytes(),
            "first command was GET, not VALIDATE",
        ),
        (
            "http probe",
            b"GET / HTTP/1.1\r\n\r\n".to_vec(),
            "first command was byte 71, not VALIDATE",
        ),
        (
            "random bytes",
            vec![0xFF, 0x13, 0x37, 0x00, 0x42],
            "first command was byte 255",
        ),
        (
            "oversized key",
            {
                let mut v = Request::Validate {
                    magic: VALIDATION_MAGIC,
                }
                .to_bytes();
                v.push(codec::Command::Set as u8);
                v.extend_from_slice(&u64::MAX.to_le_bytes());
                v
            },
            "SET key of 18446744073709551615 bytes exceeds the limit",
        ),
        (
            "oversized value",
            {
                let mut v = Request::Validate {
                    magic: VALIDATION_MAGIC,
                }
                .to_bytes();
                v.push(codec::Command::Append as u8);
                v.extend_from_slice(&1u64.to_le_bytes());
                v.push(b'k');
                v.extend_from_slice(&(9u64 << 20).to_le_bytes());
                v
            },
            "APPEND value of 9437184 bytes exceeds the limit",
        ),
        (
            "too many keys",
            {
                let mut v = Request::Validate {
                    magic: VALIDATION_MAGIC,
                }
                .to_bytes();
                v.push(codec::Command::Wait as u8);
                v.extend_from_slice(&1_000_000u64.to_le_bytes());
                v
            },
            "WAIT names 1000000 keys",
        ),
        (
            "unknown command after VALIDATE",
            {
                let mut v = Request::Validate {
                    magic: VALIDATION_MAGIC,
                }
                .to_bytes();
                v.push(99);
                v
            },
            "unknown command byte 99",
        ),
    ];
    for (what, bytes, expected_log) in &hostile {
        let mut raw = Raw::connect(addr).await;
        peers.push((raw.stream.local_addr().unwrap(), *expected_log));
        raw.stream.write_all(bytes).await.unwrap();
        raw.assert_closed().await;
        check_good().await;
        let _ = what;
    }

    // A truncated frame, then EOF.
    let mut trunc = Raw::validated(addr).await;
    let set = Request::Set {
        key: b"/half",
        value: b"written",
    }
    .to_bytes();
    trunc.stream.write_all(&set[..set.len() - 3]).await.unwrap();
    let trunc_peer = trunc.stream.local_addr().unwrap();
    trunc.stream.shutdown().await.unwrap();
    trunc.assert_closed().await;
    peers.push((trunc_peer, "connection closed in the middle of a request"));
    check_good().await;
    assert!(
        !good.check(&["half"]).await.unwrap(),
        "a truncated SET must not be applied"
    );

    // The idle connection is still open and can still validate and talk.
    idle.send(&Request::Validate {
        magic: VALIDATION_MAGIC,
    })
    .await;
    idle.send(&Request::Get { key: b"/good" }).await;
    assert_eq!(
        idle.reply(ReplyShape::Bytes).await,
        Reply::Bytes(round.to_string().into_bytes())
    );

    let text = logs.text();
    for (peer, reason) in peers {
        let line = text
            .lines()
            .find(|l| l.contains(&peer.to_string()))
            .unwrap_or_else(|| panic!("no log line names peer {peer}:\n{text}"));
        assert!(
            line.contains("WARN") && line.contains(reason),
            "for {peer} expected {reason:?} in {line}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_connections_and_clients_see_connection_lost() {
    let s = server().await;
    let port = s.port();
    let c = client(&s).await;
    let waiting = c.clone();
    let blocked =
        tokio::spawn(async move { waiting.wait(&["never"], Duration::from_secs(30)).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    s.shutdown().await;
    let err = tokio::time::timeout(T, blocked)
        .await
        .expect("wait not interrupted")
        .unwrap()
        .unwrap_err();
    assert!(err.is_connection_lost(), "{err:?}");
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
    assert!(c.set("x", b"y").await.unwrap_err().is_connection_lost());

    // Dropping a server closes its connections too.
    let s2 = server().await;
    let c2 = client(&s2).await;
    drop(s2);
    let err = tokio::time::timeout(T, c2.wait(&["never"], Duration::from_secs(30)))
        .await
        .unwrap()
        .unwrap_err();
    assert!(err.is_connection_lost(), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_retries_until_the_server_appears_and_reports_a_clear_timeout() {
    // A port that is free now (racy only against other processes grabbing it).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = StoreClient::connect("127.0.0.1", port, Duration::from_millis(300))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, StoreError::Connect { attempts, .. } if attempts > 1),
        "{err:?}"
    );
    assert!(
        msg.contains(&format!("127.0.0.1:{port}")) && msg.contains("refused"),
        "{msg}"
    );

    let connecting = tokio::spawn(async move { StoreClient::connect("127.0.0.1", port, T).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let s = StoreServer::bind("127.0.0.1", port).unwrap();
    let c = tokio::time::timeout(T, connecting)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    c.set("hello", b"world").await.unwrap();
    let second = c.reconnect().await.unwrap();
    assert_eq!(second.get("hello").await.unwrap(), b"world");
    drop(s);
}

/// An address that swallows the first connection without a word (like a recreated pod's old
/// IP still in DNS: no refusal, no answer) and leads later ones to the store: one stuck attempt
/// is given up after ATTEMPT_TIMEOUT and the next one connects, well within the overall timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_first_attempt_does_not_use_up_the_connect_timeout() {
    let store = server().await;
    let store_port = store.port();
    let front = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = front.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut swallowed = Vec::new();
        while let Ok((mut inbound, _)) = front.accept().await {
            if swallowed.is_empty() {
                swallowed.push(inbound);
                continue;
            }
            tokio::spawn(async move {
                let mut outbound = TcpStream::connect(("127.0.0.1", store_port)).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            });
        }
    });
    let overall = elastic_launch::store::client::ATTEMPT_TIMEOUT + Duration::from_secs(4);
    let c = StoreClient::connect("127.0.0.1", port, overall)
        .await
        .expect("the second attempt reaches the store");
    c.set("k", b"v").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binds_a_specific_address_and_the_dual_stack_default() {
    let s = StoreServer::bind("127.0.0.2", 0).unwrap();
    assert_eq!(s.local_addr().ip().to_string(), "127.0.0.2");
    let c = StoreClient::connect("127.0.0.2", s.port(), T)
        .await
        .unwrap();
    c.ping().await.unwrap();
    assert!(
        StoreClient::connect("127.0.0.1", s.port(), Duration::from_millis(100))
            .await
            .is_err()
    );

    let v6 = StoreServer::bind("::1", 0).unwrap();
    assert_eq!(v6.local_addr().ip().to_string(), "::1");
    StoreClient::connect("[::1]", v6.port(), T)
        .await
        .unwrap()
        .ping()
        .await
        .unwrap();

    let any = StoreServer::bind("", 0).unwrap();
    assert!(any.local_addr().ip().is_unspecified());
    assert!(
        any.local_addr().is_ipv6(),
        "this machine has IPv6: [::] listens on both"
    );
    StoreClient::connect("127.0.0.1", any.port(), T)
        .await
        .unwrap()
        .ping()
        .await
        .unwrap();
    for host in ["::1", "[::1]"] {
        StoreClient::connect(host, any.port(), T)
            .await
            .unwrap()
            .ping()
            .await
            .unwrap();
    }
    let taken = StoreServer::bind("127.0.0.2", s.port())
        .err()
        .expect("port in use");
    assert!(
        taken
            .to_string()
            .contains(&format!("127.0.0.2:{}", s.port())),
        "{taken}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_requests_are_refused_locally_without_losing_the_connection() {
    let s = server().await;
    let c = client(&s).await;
    let long_key = "k".repeat(9000);
    let err = c.set(&long_key, b"v").await.unwrap_err();
    assert!(matches!(err, StoreError::InvalidRequest { .. }), "{err:?}");
    assert!(err.to_string().contains("exceeds the limit"), "{err}");
    // Each value is allowed, all of them in one request are not.
    let value = vec![0u8; 8 << 20];
    let pairs: Vec<(String, &[u8])> = (0..8).map(|i| (format!("v{i}"), &value[..])).collect();
    let err = c.multi_set(pairs).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("MULTI_SET request is larger than the limit of 67108864 bytes"),
        "{err}"
    );
    c.set("fine", b"v").await.unwrap();
    assert_eq!(c.get("fine").await.unwrap(), b"v");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_request_breaks_the_client_instead_of_desynchronising_it() {
    let s = server().await;
    let c = client(&s).await;
    // Dropping the future mid-wait leaves a WAIT outstanding on the connection.
    let _ = tokio::time::timeout(Duration::from_millis(50), c.get("absent")).await;
    let err = c.ping().await.unwrap_err();
    assert!(
        err.is_connection_lost() && err.to_string().contains("abandoned"),
        "{err}"
    );
}

/// A key with an `ephemeral` segment lives as long as the connection that set it last: gone
/// when that connection closes (as a crashed agent's do), kept when another set it since.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ephemeral_keys_go_with_the_connection_that_set_them() {
    let s = server().await;
    let watcher = client(&s).await;
    let a = client(&s).await;
    let b = client(&s).await;
    a.set("rdzv/x/ephemeral/alive/a", b"1").await.unwrap();
    a.set("rdzv/x/ephemeral/alive/shared", b"1").await.unwrap();
    a.set("rdzv/x/durable/a", b"1").await.unwrap();
    // SET has no reply: a round trip on each connection makes sure the server has them, and
    // orders b's SET of the shared key after a's (the connections are served independently).
    a.check(&["rdzv/x/durable/a"]).await.unwrap();
    b.set("rdzv/x/ephemeral/alive/shared", b"2").await.unwrap();
    b.check(&["rdzv/x/ephemeral/alive/shared"]).await.unwrap();
    assert!(watcher.check(&["rdzv/x/ephemeral/alive/a"]).await.unwrap());
    drop(a);
    let gone = async {
        while watcher.check(&["rdzv/x/ephemeral/alive/a"]).await.unwrap() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(T, gone)
        .await
        .expect("a's ephemeral key is deleted");
    assert!(watcher.check(&["rdzv/x/durable/a"]).await.unwrap());
    assert_eq!(
        watcher.get("rdzv/x/ephemeral/alive/shared").await.unwrap(),
        b"2",
        "set last by b, which is still connected"
    );
    drop(b);
}

fn limited(limits: Limits) -> StoreServer {
    let config = ServerConfig {
        limits,
        ..ServerConfig::default()
    };
    StoreServer::bind_on(&tokio::runtime::Handle::current(), "127.0.0.1", 0, config).unwrap()
}

/// A raw connection from another loopback address, as a different pod would be.
async fn connect_from(local: &str, server: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{local}:0").parse().unwrap()).unwrap();
    socket.connect(server).await.unwrap()
}

/// True once the server has closed `stream` (EOF or reset) within `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut sink = [0u8; 64];
    tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_silent_connections_is_bounded_and_timed_out_while_others_connect() {
    let validate_within = Duration::from_secs(3);
    let s = limited(Limits {
        unvalidated_per_peer: 20,
        validate_within,
        ..Limits::default()
    });
    let addr = s.local_addr();
    let good = client(&s).await;

    // 200 connections that never send VALIDATE, from one address.
    let mut flood = Vec::new();
    for _ in 0..200 {
        flood.push(connect_from("127.0.0.2", addr).await);
    }
    // Past the per-peer limit they are closed as they come...
    let mut refused = 0;
    for stream in &mut flood {
        if closed_within(stream, Duration::from_millis(20)).await {
            refused += 1;
        }
    }
    assert_eq!(
        refused, 180,
        "only 20 silent connections may wait for VALIDATE"
    );

    // ...while clients from other addresses connect and work, old and new.
    good.set("k", "v").await.unwrap();
    let fresh = client(&s).await;
    assert_eq!(fresh.get("k").await.unwrap(), b"v");

    // The 20 that were let in are closed once their time to validate is up.
    tokio::time::sleep(validate_within).await;
    for stream in &mut flood {
        assert!(
            closed_within(stream, T).await,
            "a silent connection outlived its time to validate"
        );
    }
    // And then the address may connect again.
    let mut again = Raw::validated(addr).await;
    again.send(&Request::Get { key: b"/k" }).await;
    assert_eq!(
        again.reply(ReplyShape::Bytes).await,
        Reply::Bytes(b"v".to_vec())
    );
    good.ping().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_and_requests_in_flight_are_bounded_and_only_the_offender_is_closed() {
    let logs = captured_logs();
    let s = limited(Limits {
        stored_bytes: 1 << 20,
        buffered_bytes: 4 << 20,
        ..Limits::default()
    });
    let addr = s.local_addr();
    let good = client(&s).await;
    good.set("kept", "yes").await.unwrap();

    // A client filling the store: its SETs are taken until the next could pass the limit.
    let filler = client(&s).await;
    let value = vec![7u8; 200 << 10];
    let mut written = 0;
    let err = loop {
        // SET has no reply: the PING after it says whether it was taken.
        let taken = filler.set(&format!("big/{written}"), &value).await;
        match taken.and(filler.ping().await) {
            Ok(()) => written += 1,
            Err(e) => break e,
        }
        assert!(
            written < 10,
            "a 1 MiB store took {written} values of 200 KiB"
        );
    };
    assert!(err.is_connection_lost(), "{err}");
    assert_eq!(written, 5);
    assert_eq!(good.get("kept").await.unwrap(), b"yes");
    assert!(good.check(&["big/4"]).await.unwrap());
    // Deleting makes room again.
    assert!(good.delete_key("big/4").await.unwrap());
    good.set("small", vec![1u8; 100 << 10]).await.unwrap();

    // Requests still arriving: two clients each send 3 MiB of an 8 MiB value; the store may
    // hold 4 MiB of such bytes, so the second is closed and the first is not.
    let partial = |local: &'static str| async move {
        let mut stream = connect_from(local, addr).await;
        let mut bytes = Request::Validate {
            magic: VALIDATION_MAGIC,
        }
        .to_bytes();
        bytes.push(codec::Command::Set as u8);
        bytes.extend_from_slice(&1u64.to_le_bytes());
        bytes.push(b'x');
        bytes.extend_from_slice(&(8u64 << 20).to_le_bytes());
        bytes.resize(bytes.len() + (3 << 20), 0);
        stream.write_all(&bytes).await.unwrap();
        stream
    };
    let mut first = partial("127.0.0.3").await;
    tokio::time::sleep(QUIET).await;
    let mut second = partial("127.0.0.4").await;
    assert!(
        closed_within(&mut second, T).await,
        "the second partial request was not refused"
    );
    assert!(
        !closed_within(&mut first, QUIET).await,
        "the first partial request was refused"
    );
    good.ping().await.unwrap();

    let text = logs.text();
    assert!(
        text.contains("SET of 204823 bytes refused: the store holds"),
        "{text}"
    );
    assert!(
        text.contains("127.0.0.4") && text.contains("requests still arriving on all connections hold more than the limit of 4194304 bytes"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_launchers_write_their_keys_and_torch_clients_keep_theirs() {
    let token = AgentToken::new("the job's secret");
    let s = StoreServer::bind_on(
        &tokio::runtime::Handle::current(),
        "127.0.0.1",
        0,
        ServerConfig::for_agents(&token),
    )
    .unwrap();
    let port = s.port();
    let agent = Connector::agent(&token)
        .connect("127.0.0.1", port, T)
        .await
        .unwrap();
    agent.set("rdzv/job/r0/closed", "1").await.unwrap();
    agent.add("static/job/exit/0", 1).await.unwrap();
    assert!(
        !agent
            .list_keys()
            .await
            .unwrap()
            .iter()
            .any(|k| k.contains("elasticjob")),
        "the token is never stored"
    );

    // A torch client (a worker) reads the launchers' keys and writes its own...
    let torch = client(&s).await;
    assert_eq!(torch.get("rdzv/job/r0/closed").await.unwrap(), b"1");
    torch.set("worker/attempt_0/x", "y").await.unwrap();
    torch.add("init/", 1).await.unwrap();
    // ...but every way of changing a launchers' key closes its connection, and changes nothing.
    let writes: Vec<(&str, Request<'_>)> = vec![
        (
            "SET",
            Request::Set {
                key: b"/rdzv/job/r0/closed",
                value: b"0",
            },
        ),
        (
            "DELETE_KEY",
            Request::DeleteKey {
                key: b"/rdzv/job/r0/closed",
            },
        ),
        (
            "ADD",
            Request::Add {
                key: b"/static/job/exit/0",
                delta: 5,
            },
        ),
        (
            "COMPARE_SET",
            Request::CompareSet {
                key: b"/rdzv/job/r0/closed",
                expected: b"1",
                desired: b"0",
            },
        ),
        (
            "APPEND",
            Request::Append {
                key: b"/rdzv/job/round",
                value: b"9",
            },
        ),
        (
            "MULTI_SET",
            Request::MultiSet {
                pairs: vec![(b"/a", b"1"), (b"/rdzv/job/round", b"9")],
            },
        ),
        (
            "QUEUE_PUSH",
            Request::QueuePush {
                key: b"/rdzv/job/q",
                value: b"x",
            },
        ),
        (
            "BARRIER",
            Request::Barrier {
                key: b"/rdzv/job/b",
                world_size: 2,
            },
        ),
    ];
    for (name, write) in writes {
        let mut raw = Raw::validated(s.local_addr()).await;
        raw.send(&write).await;
        raw.assert_closed().await;
        assert_eq!(
            agent.get("rdzv/job/r0/closed").await.unwrap(),
            b"1",
            "after {name}"
        );
    }
    assert_eq!(agent.get("static/job/exit/0").await.unwrap(), b"1");
    assert!(
        !agent.check(&["a"]).await.unwrap(),
        "a refused MULTI_SET writes none of its pairs"
    );
    assert_eq!(torch.get("worker/attempt_0/x").await.unwrap(), b"y");

    // A launcher with another token is refused at connect, with a message that says why.
    let err = Connector::agent(&AgentToken::new("another job's"))
        .connect_once("127.0.0.1", port, T)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("ELASTICJOB_STORE_TOKEN"), "{err}");

    // A plain store (torch's role, no token) lets anyone write anything.
    let plain = server().await;
    let c = client(&plain).await;
    c.set("rdzv/job/r0/closed", "1").await.unwrap();
    assert_eq!(c.get("rdzv/job/r0/closed").await.unwrap(), b"1");
}
