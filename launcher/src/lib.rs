//! elastic-launch: a drop-in `torchrun` in Rust.
//!
//! The launcher is split the way torch elastic is: `cli` turns argv and `PET_*` into a plain
//! [`config::Config`]; `agent` runs the lifecycle (rendezvous → start workers → monitor →
//! restart or finish); `rendezvous` decides membership and ranks; `store` is the c10d TCPStore
//! (wire codec, server, client) that both the agents and the PyTorch workers talk to;
//! `workers` spawns and supervises worker processes; `worker_env` builds their environment;
//! `progress` is what the launcher serves about itself (`--status-port`); `logs`, `failures`,
//! `devices` and `report` hold the rest; `install` copies the launcher into a
//! pod (the operator's init container); `wrap` runs a shell command that calls `torchrun`
//! once per pod, standing in as that `torchrun`.

pub mod agent;
pub mod cli;
pub mod config;
pub mod devices;
pub mod entrypoint;
pub mod failures;
pub mod install;
pub mod lifecycle;
pub mod logs;
pub mod prewarm;
pub mod progress;
pub mod rendezvous;
pub mod report;
pub mod store;
pub mod store_failover;
pub mod template;
pub mod training;
pub mod worker_env;
pub mod workers;
pub mod wrap;
