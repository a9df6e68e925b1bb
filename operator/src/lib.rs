//! The ElasticJob operator's decisions, as pure functions over data: no client, no IO. The
//! controller (reconcile loop, apply, events) is built on top of them.
//!
//! - [`observed`]: the facts of a job's pods that the decisions use;
//! - [`desired`]: the Service and pods a job should have (the pod contract);
//! - [`failure`]: why a pod failed (application or infrastructure, retryable or permanent);
//! - [`status`]: the next status (conditions, failures, counters) of a job;
//! - [`mod@plan`]: the actions for one reconcile (create, delete, force-delete, requeue);
//! - [`event`]: the events to publish.

pub mod desired;
pub mod event;
pub mod failure;
pub mod observed;
pub mod plan;
pub mod status;

#[cfg(test)]
pub(crate) mod fixtures;

pub use desired::{DesiredError, Settings};
pub use observed::ObservedPod;
pub use plan::{Action, Plan, plan};
