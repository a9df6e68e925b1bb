//! Load generator for a c10d TCPStore server (ours or torch's): N connections, each in a closed
//! loop of SET then GET of its own key with a fixed-size value, sent as torch's client sends
//! them (one write per request). Reports op pairs per second and the p50/p99 latency of a pair,
//! and checks every GET returns the value just set.
//!
//! usage: store-bench --port P [--host 127.0.0.1] [--conns 1,16,256] [--secs 5] [--warmup 1]
//!                    [--value 1024] [--threads 1]
//! Prints one line per connection count:
//!   conns=16 ops_per_s=12345 p50_us=101.2 p99_us=350.7 pairs=61725

use std::time::{Duration, Instant};

use elastic_launch::store::codec::{self, Reply, ReplyShape, Request, VALIDATION_MAGIC};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Args {
    host: String,
    port: u16,
    conns: Vec<usize>,
    secs: f64,
    warmup: f64,
    value: usize,
    threads: usize,
}

fn parse_args() -> Args {
    let mut a = Args {
        host: "127.0.0.1".into(),
        port: 0,
        conns: vec![1, 16, 256],
        secs: 5.0,
        warmup: 1.0,
        value: 1024,
        threads: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--host" => a.host = v,
            "--port" => a.port = v.parse().expect("--port"),
            "--conns" => {
                a.conns = v
                    .split(',')
                    .map(|n| n.trim().parse().expect("--conns"))
                    .collect()
            }
            "--secs" => a.secs = v.parse().expect("--secs"),
            "--warmup" => a.warmup = v.parse().expect("--warmup"),
            "--value" => a.value = v.parse().expect("--value"),
            "--threads" => a.threads = v.parse().expect("--threads"),
            _ => panic!("unknown flag {flag}"),
        }
    }
    assert!(a.port != 0, "--port is required");
    assert!(
        a.value >= 8,
        "--value must be at least 8 bytes (it carries a counter)"
    );
    a
}

fn main() {
    let args = parse_args();
    // One thread by default: on a small machine the generator should leave the other cores to
    // the server under test, and it does so the same way for both servers.
    let rt = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()
    }
    .expect("tokio runtime");
    for &n in &args.conns {
        let (pairs, mut lat) = rt.block_on(run(&args, n));
        lat.sort_unstable();
        let pct =
            |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)] as f64 / 1000.0;
        println!(
            "conns={n} ops_per_s={:.0} p50_us={:.1} p99_us={:.1} pairs={pairs}",
            pairs as f64 / args.secs,
            pct(0.50),
            pct(0.99)
        );
    }
}

/// Runs `n` connections for warm-up + measurement; returns the pairs completed in the
/// measurement window and their latencies in nanoseconds.
async fn run(args: &Args, n: usize) -> (usize, Vec<u64>) {
    let mut streams = Vec::with_capacity(n);
    for _ in 0..n {
        streams.push(connect(&args.host, args.port).await);
    }
    let start = Instant::now() + Duration::from_millis(50);
    let measure_from = start + Duration::from_secs_f64(args.warmup);
    let end = measure_from + Duration::from_secs_f64(args.secs);
    let tasks: Vec<_> = streams
        .into_iter()
        .enumerate()
        .map(|(i, s)| tokio::spawn(conn_loop(s, i, args.value, start, measure_from, end)))
        .collect();
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.expect("connection task"));
    }
    (lat.len(), lat)
}

async fn connect(host: &str, port: u16) -> TcpStream {
    let mut s = TcpStream::connect((host, port))
        .await
        .expect("connect to the store");
    s.set_nodelay(true).unwrap();
    let mut hello = Request::Validate {
        magic: VALIDATION_MAGIC,
    }
    .to_bytes();
    Request::Ping { nonce: 1 }.encode(&mut hello);
    s.write_all(&hello).await.unwrap();
    let mut echo = [0u8; 4];
    s.read_exact(&mut echo).await.unwrap();
    assert_eq!(u32::from_le_bytes(echo), 1, "PING echo");
    s
}

async fn conn_loop(
    mut s: TcpStream,
    i: usize,
    value_len: usize,
    start: Instant,
    measure_from: Instant,
    end: Instant,
) -> Vec<u64> {
    tokio::time::sleep_until(start.into()).await;
    let key = format!("/bench/{i}");
    let mut value = vec![b'x'; value_len];
    let (mut set, mut get, mut rbuf) = (Vec::new(), Vec::new(), Vec::with_capacity(2 * value_len));
    Request::Get {
        key: key.as_bytes(),
    }
    .encode(&mut get);
    let mut lat = Vec::new();
    for iter in 0u64.. {
        let t0 = Instant::now();
        if t0 >= end {
            break;
        }
        value[..8].copy_from_slice(&iter.to_le_bytes());
        set.clear();
        Request::Set {
            key: key.as_bytes(),
            value: &value,
        }
        .encode(&mut set);
        s.write_all(&set).await.unwrap();
        s.write_all(&get).await.unwrap();
        let reply = loop {
            if let Some((reply, used)) = codec::decode_reply(ReplyShape::Bytes, &rbuf).unwrap() {
                rbuf.drain(..used);
                break reply;
            }
            rbuf.reserve(value_len + 64);
            assert!(
                s.read_buf(&mut rbuf).await.unwrap() > 0,
                "server closed the connection"
            );
        };
        assert!(
            matches!(&reply, Reply::Bytes(v) if *v == value),
            "GET must return the value just set"
        );
        if t0 >= measure_from {
            lat.push(t0.elapsed().as_nanos() as u64);
        }
    }
    lat
}
