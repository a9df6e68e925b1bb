//! The ElasticJob operator. Its decisions are pure functions over data (no client, no IO);
//! the controller (reconcile loop, apply, events), metrics, health endpoints and leader
//! election are the IO around them.
//!
//! - [`controller`]: the reconcile loop (read pods, plan, write status, act, publish events);
//! - [`metrics`], [`http`]: Prometheus metrics, /metrics, /healthz, /readyz;
//! - [`leader`]: leader election through a Lease; [`client`]: the rate limit and request
//!   metrics of the operator's Kubernetes client;
//! - [`caches`]: the watches of nodes, pods, Services and Kueue's Workloads and
//!   ResourceFlavors, warm on a standby too; [`pod_cache`]: the jobs' pods from one watch,
//!   indexed by job; [`expectations`]: the operator's own pod writes the cache does not show
//!   yet; [`workload_writes`]: the operator's recent Workload writes, after which a job lists
//!   its Workloads instead of reading the cache;
//! - [`observed`]: the facts of a job's pods that the decisions use;
//! - [`desired`]: the Service and pods a job should have (the pod contract);
//! - [`kueue`]: admission through a Kueue Workload; [`gang`]: a scheduler-plugins PodGroup;
//!   [`queueing`] does their IO;
//! - [`bad_nodes`]: the nodes new pods avoid after the job lost pods there to the node;
//! - [`failure`]: why a pod failed (application or infrastructure, retryable or permanent);
//! - [`next_status`]: the next status (conditions, failures, counters) of a job;
//! - [`mod@plan`]: the actions for one reconcile (create, delete, force-delete, requeue);
//! - [`event`]: the events to publish;
//! - [`progress`]: the launchers' own reports (round, world size, worker restarts) folded into
//!   the status; [`poller`] reads them from the launchers' status endpoints in the background
//!   ([`poll`] is its HTTP client).

pub mod bad_nodes;
pub mod caches;
pub mod client;
pub mod controller;
pub mod desired;
pub mod event;
pub mod expectations;
pub mod failure;
pub mod gang;
pub mod http;
pub mod kueue;
pub mod leader;
pub mod metrics;
pub mod next_status;
pub mod observed;
pub mod plan;
pub mod pod_cache;
pub mod poll;
pub mod poller;
pub mod progress;
pub mod queueing;
pub mod training;
pub mod workload_writes;

#[cfg(test)]
pub(crate) mod fixtures;

pub use desired::{DesiredError, Settings};
pub use observed::ObservedPod;
pub use plan::{Action, Plan, plan};
