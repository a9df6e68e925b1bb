//! The contract between `elastic-launch` (in every pod) and the ElasticJob operator: what the
//! operator sets on a pod, and what the launcher reports back. Both sides build from these
//! types and names, so a change here is a change to both, made once; the tests here pin the
//! wire shapes, including reports written by older launchers. See `docs/pod-contract.md`.
//!
//! - [`mod@env`]: the environment variables and `--rdzv-conf` keys the operator sets;
//! - [`install`]: the launcher's install mode, run by the operator's init container;
//! - [`report`]: the launcher's last word, its container's termination message;
//! - [`progress`]: the body of the launcher's `GET /status` while it runs;
//! - [`stop`]: why workers are stopped, told to them (and by the operator to the launcher);
//! - [`listen`]: how both sides listen on their ports, IPv6 and IPv4 alike;
//! - [`limits`]: process limits both raise at start.

pub mod env;
pub mod install;
pub mod limits;
pub mod listen;
pub mod progress;
pub mod report;
pub mod stop;

/// The `kind` of every document the launcher produces for the operator (report and progress),
/// so the operator tells them from other JSON and knows their shape.
pub const KIND: &str = "elastic-launch/v1";
