//! The threads the launcher's store servers run on: a runtime of their own, apart from the
//! agent's single thread. The active store serves every worker of every node (their
//! `init_process_group`, barriers, NCCL id exchange) as well as the rendezvous: on the agent's
//! thread, a burst from thousands of workers would delay the agent's own heartbeat, and the
//! store could use one core at most.

use std::sync::OnceLock;

use tokio::runtime::{Builder, Handle, Runtime};

use super::{ServerConfig, StoreError, StoreServer};

/// At most this many store threads: beyond a few, the kernel's TCP path and the store's one
/// lock bound the throughput, and an idle thread still costs its stack.
pub const MAX_THREADS: usize = 8;

/// How many store threads a machine with `cores` cores gets.
pub fn thread_count(cores: usize) -> usize {
    cores.clamp(1, MAX_THREADS)
}

/// The store runtime, started on first use and kept for the life of the process. Built inside
/// `get_or_init`, so it is built once: a second runtime dropped in async code would panic.
fn handle() -> Result<&'static Handle, StoreError> {
    static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();
    let runtime = RUNTIME.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Builder::new_multi_thread()
            .worker_threads(thread_count(cores))
            .thread_name("store")
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
    });
    runtime
        .as_ref()
        .map(Runtime::handle)
        .map_err(|e| StoreError::Bind {
            addr: "the store's threads".into(),
            source: std::io::Error::other(e.clone()),
        })
}

/// Binds a store server (as [`StoreServer::bind`]) that runs on the store threads.
pub fn bind(host: &str, port: u16, config: ServerConfig) -> Result<StoreServer, StoreError> {
    StoreServer::bind_on(handle()?, host, port, config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_thread_per_core_up_to_the_cap() {
        assert_eq!(thread_count(0), 1);
        assert_eq!(thread_count(2), 2);
        assert_eq!(thread_count(128), MAX_THREADS);
    }
}
