//! Hosts `elastic_launch::store::StoreServer` for the store benchmark: prints the port on
//! stdout, then serves until stdin closes (or the process is killed).
//!
//! usage: `store-server [PORT] [WORKER_THREADS]`   (defaults: 0 = OS-chosen, one per core)

use std::io::Read;

fn main() {
    let mut args = std::env::args().skip(1);
    let port: u16 = args
        .next()
        .map_or(0, |p| p.parse().expect("PORT must be a number"));
    let threads: Option<usize> = args
        .next()
        .map(|t| t.parse().expect("WORKER_THREADS must be a number"));
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = threads {
        rt.worker_threads(n);
    }
    let rt = rt.enable_all().build().expect("tokio runtime");
    let server = rt
        .block_on(async { elastic_launch::store::StoreServer::bind("", port) })
        .expect("bind");
    println!("{}", server.port());
    // Serve until our parent closes stdin: the runtime's workers run the server meanwhile.
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    rt.block_on(server.shutdown());
}
