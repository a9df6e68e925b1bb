//! `elasticjob-operator`: the command line. The controller (watch ElasticJobs and their pods,
//! apply `elasticjob_operator::plan`, write status, publish events) is not written yet; this
//! binary parses its settings and says so.

use std::process::ExitCode;

use clap::Parser;

/// Reconciles ElasticJobs (elasticjob.dev/v1alpha1) into a headless Service and worker pods.
#[derive(Debug, Parser)]
#[command(name = "elasticjob-operator", version, about)]
struct Args {
    /// Image of the launcher (elastic-launch) copied into pods, for jobs that name none.
    #[arg(long, env = "ELASTICJOB_LAUNCHER_IMAGE")]
    launcher_image: Option<String>,
    /// The cluster's DNS domain, used in the rendezvous endpoint.
    #[arg(long, env = "ELASTICJOB_CLUSTER_DOMAIN", default_value = elasticjob_operator::desired::DEFAULT_CLUSTER_DOMAIN)]
    cluster_domain: String,
    /// Watch only this namespace (default: all).
    #[arg(long, env = "ELASTICJOB_NAMESPACE")]
    namespace: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let _settings = elasticjob_operator::Settings {
        launcher_image: args.launcher_image,
        cluster_domain: args.cluster_domain,
    };
    eprintln!(
        "elasticjob-operator: the controller loop is not implemented yet (namespace: {})",
        args.namespace.as_deref().unwrap_or("all")
    );
    ExitCode::from(2)
}
