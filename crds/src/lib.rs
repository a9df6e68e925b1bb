//! The ElasticJob API, `elasticjob.dev/v1alpha1`: the Rust types are the source of truth and the
//! CRD (`crds/elasticjob.yaml`) is generated from them by the `crdgen` binary.
//!
//! - [`spec`]: what the user writes ([`ElasticJob`], [`ElasticJobSpec`] and its parts);
//! - [`status`]: what the operator reports ([`ElasticJobStatus`], failures, conditions);
//! - [`names`]: labels, reserved names and other constants shared by the operator and the docs;
//! - [`accelerator`]: which accelerator resource (`nvidia.com/gpu`, `amd.com/gpu`, ...) a
//!   container asks for, and how many;
//! - [`command`]: how the user's command is run under the launcher;
//! - [`mod@validate`]: the checks the CRD's CEL rules make, and more, for servers that do not run
//!   CEL (Kubernetes < 1.25) and for the operator itself;
//! - [`schema`]: schema adjustments (the embedded pod template, int-or-string fields).

pub mod accelerator;
pub mod command;
pub mod names;
pub mod schema;
pub mod spec;
pub mod status;
pub mod validate;

pub use spec::{
    Backoff, CleanPodPolicy, ElasticJob, ElasticJobSpec, FailurePolicy, LauncherSpec, Nproc,
    NprocPerNode, RendezvousSpec, RunPolicy,
};
pub use status::{ElasticJobStatus, FailureCategory, FailureRecord, JobState};
pub use validate::{ValidationIssue, validate, warnings};

use kube::CustomResourceExt;

/// The CRD as YAML, exactly as checked in at `crds/elasticjob.yaml`.
pub fn crd_yaml() -> Result<String, serde_saphyr::SerializeError> {
    let yaml = serde_saphyr::to_string(&ElasticJob::crd())?;
    Ok(format!(
        "# Generated from the Rust types in crds/src by `cargo run -p elasticjob-crds --bin crdgen > crds/elasticjob.yaml`.\n# Do not edit by hand.\n{yaml}"
    ))
}
