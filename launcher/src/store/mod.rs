//! The c10d TCPStore: the key-value store that torch elastic agents rendezvous through and that
//! PyTorch workers (`init_process_group`, Gloo, NCCL) talk to with torch's own `TCPStore`
//! client. `codec` is the wire format (pure), `server` serves it with the semantics of torch's
//! libuv server, `client` is an async client with the semantics of torch's Python `TCPStore`.
//! The protocol is described in `docs/store-protocol.md`.

pub mod client;
pub mod codec;
pub mod server;
pub mod threads;

use std::sync::Arc;
use std::time::Duration;

pub use client::{Connector, StoreClient};
pub use server::{Limits, ServerConfig, StoreServer};

/// The secret that makes a store connection one of the job's launchers: on a store that knows
/// it, only such connections may write the launchers' own keys ([`server::is_agent_key`]), so
/// no stray client, torch worker or other job can end a round. Its Debug form hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct AgentToken(Arc<[u8]>);

impl AgentToken {
    pub fn new(secret: impl AsRef<[u8]>) -> AgentToken {
        AgentToken(Arc::from(secret.as_ref()))
    }

    /// The job's token: `given` (`ELASTICJOB_STORE_TOKEN`: the operator sets a random one per job)
    /// when set. Else one every launcher knows, which keeps out torch clients (workers) and
    /// strays but not another launcher; several runs may still share one store, as with
    /// torchrun.
    pub fn from_env(given: Option<&str>) -> AgentToken {
        AgentToken::new(given.filter(|t| !t.is_empty()).unwrap_or("elastic-launch"))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for AgentToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AgentToken(..)")
    }
}

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
