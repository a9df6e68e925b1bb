//! The c10d TCPStore: the key-value store that torch elastic agents rendezvous through and that
//! PyTorch workers (`init_process_group`, Gloo, NCCL) talk to with torch's own `TCPStore`
//! client. `codec` is the wire format (pure), `server` serves it with the semantics of torch's
//! libuv server, `client` is an async client with the semantics of torch's Python `TCPStore`.
//! The protocol is described in `docs/store-protocol.md`.

pub mod client;
pub mod codec;
pub mod server;
pub mod threads;

use std::time::Duration;

pub use client::StoreClient;
pub use server::{Limits, StoreServer};

/// Everything that can go wrong with the store, each naming what failed and where.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("could not bind the store server to {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },

    #[error(
        "could not connect to the store at {addr}: tried {attempts} times for {waited:.1?}, last error: {last_error}"
    )]
    Connect {
        addr: String,
        waited: Duration,
        attempts: u32,
        last_error: String,
    },

    #[error("lost the connection to the store at {addr}: {reason}")]
    ConnectionLost { addr: String, reason: String },

    /// `what` says what timed out: "wait for keys /a, /b", "barrier on key /x", "reply to GET".
    /// After a wait or barrier timeout the connection stays usable (the wait was cancelled on
    /// the server); after a reply timeout it does not.
    #[error("{what} timed out after {}ms on the store at {addr}", timeout.as_millis())]
    Timeout {
        addr: String,
        what: String,
        timeout: Duration,
    },

    #[error("the store at {addr} sent an invalid reply to {command}: {reason}")]
    Protocol {
        addr: String,
        command: &'static str,
        reason: String,
    },

    #[error("refused to send an invalid {command} request: {reason}")]
    InvalidRequest {
        command: &'static str,
        reason: String,
    },
}

impl StoreError {
    /// True when the store can no longer be reached through this client (the agent's signal that
    /// the store host died).
    pub fn is_connection_lost(&self) -> bool {
        matches!(self, StoreError::ConnectionLost { .. })
    }

    /// True for the timeouts of `wait`, `barrier` and of a reply.
    pub fn is_timeout(&self) -> bool {
        matches!(self, StoreError::Timeout { .. })
    }
}
