//! Hosts `elastic_launch::store::StoreServer` for the store benchmark: prints the port on
//! stdout, then serves until stdin closes (or the process is killed).
//!
//! usage: `store-server [PORT] [WORKER_THREADS]`
//! PORT 0 (the default) lets the OS choose. Without WORKER_THREADS the server runs as the
//! launcher runs it (`elastic_launch::store::threads`: one thread per core, at most 8); with it,
//! on a runtime of that many worker threads.

use std::io::Read;

use elastic_launch::store::{AgentToken, ServerConfig, StoreServer};

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
    let custom = threads.map(|n| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build()
            .expect("tokio runtime")
    });
    // As the launcher runs it: keeping the launchers' keys for them (the check every worker's
    // write goes through).
    let config = ServerConfig::for_agents(&AgentToken::new("bench"));
    let server = match &custom {
        Some(rt) => StoreServer::bind_on(rt.handle(), "", port, config),
        None => elastic_launch::store::threads::bind("", port, config),
    }
    .expect("bind");
    println!("{}", server.port());
    // Serve until our parent closes stdin: the server's own threads run it meanwhile.
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("tokio runtime")
        .block_on(server.shutdown());
}
