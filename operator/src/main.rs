//! `elasticjob-operator`: reconciles ElasticJobs (elasticjob.dev/v1alpha1) into a headless
//! Service and worker pods. Settings come from flags (or their env vars); the cluster from
//! KUBECONFIG or the in-cluster service account.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::{Context as _, Result};
use clap::{Parser, ValueEnum};
use kube::client::ClientBuilder;
use kube::runtime::events::Reporter;
use tracing::{error, info};

use elasticjob_operator::caches::{Caches, Scope};
use elasticjob_operator::client::{ApiLayer, RateLimit};
use elasticjob_operator::controller;
use elasticjob_operator::http::{self, Health};
use elasticjob_operator::metrics::Metrics;
use elasticjob_operator::{Settings, leader};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

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
    /// Address of /metrics, /healthz and /readyz (`[::]`: every address, IPv6 and IPv4).
    #[arg(long, env = "ELASTICJOB_METRICS_ADDR", default_value = "[::]:8080")]
    metrics_addr: SocketAddr,
    /// Reconcile only while holding the leader Lease (for several replicas).
    #[arg(long, env = "ELASTICJOB_LEADER_ELECT")]
    leader_elect: bool,
    /// Name of the leader Lease.
    #[arg(long, default_value = "elasticjob-operator")]
    lease_name: String,
    /// Seconds the leader Lease holds without renewal: after a leader crashes, a standby
    /// takes over within this long.
    #[arg(long, env = "ELASTICJOB_LEADER_ELECT_LEASE_DURATION", default_value_t = leader::LeaseTiming::default().duration_seconds)]
    leader_elect_lease_duration: u64,
    /// Seconds before the Lease lapses that the leader renews it.
    #[arg(long, env = "ELASTICJOB_LEADER_ELECT_RENEW_GRACE", default_value_t = leader::LeaseTiming::default().grace_seconds)]
    leader_elect_renew_grace: u64,
    /// Namespace of the leader Lease (default: the pod's namespace, POD_NAMESPACE).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// This replica's name in the Lease and in events (default: the pod name, POD_NAME).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Jobs reconciled at once (the rest wait in the queue).
    #[arg(long, env = "ELASTICJOB_CONCURRENCY", default_value_t = 16)]
    concurrency: u16,
    /// Requests a second to the apiserver, sustained (0, the default: no client-side limit;
    /// the apiserver's API Priority and Fairness protects it, and --concurrency bounds what
    /// the operator has in flight). Leader election has its own client and is never held back
    /// by it.
    #[arg(long, env = "ELASTICJOB_KUBE_QPS", default_value_t = 0.0)]
    kube_qps: f64,
    /// Requests to the apiserver allowed at once above --kube-qps.
    #[arg(long, env = "ELASTICJOB_KUBE_BURST", default_value_t = 100)]
    kube_burst: u32,
    /// Log format; the level comes from RUST_LOG (default info).
    #[arg(
        long,
        env = "ELASTICJOB_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    log_format: LogFormat,
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,kube_lease_manager=warn".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    init_tracing(args.log_format);
    let identity = args
        .identity
        .clone()
        .unwrap_or_else(|| format!("elasticjob-operator-{}", hostname_or_pid()));
    let config = kube::Config::infer()
        .await
        .context("connecting to Kubernetes (KUBECONFIG or the in-cluster service account)")?;
    let metrics = Arc::new(Metrics::default());
    let layer = |limit| ApiLayer {
        metrics: metrics.clone(),
        limit,
    };
    let builder =
        || ClientBuilder::try_from(config.clone()).context("building the Kubernetes client");
    let client = builder()?
        .with_layer(&layer(Some(RateLimit {
            qps: args.kube_qps,
            burst: args.kube_burst,
        })))
        .build();
    // The Lease is renewed on time even when reconciles use up the rate limit.
    let lease_client = builder()?.with_layer(&layer(None)).build();
    let ready = Arc::new(AtomicBool::new(false));
    let store = Arc::new(std::sync::OnceLock::new());
    let health = Health {
        metrics: metrics.clone(),
        ready: ready.clone(),
        refresh: {
            let (store, metrics) = (store.clone(), metrics.clone());
            Arc::new(move || {
                if let Some(s) = store.get() {
                    let s: &kube::runtime::reflector::Store<elasticjob_crds::spec::ElasticJob> = s;
                    let jobs = s.state();
                    metrics.set_job_states(
                        jobs.iter()
                            .filter_map(|j| j.status.as_ref().and_then(|st| st.state)),
                    );
                    metrics.set_goodput(jobs.iter().filter_map(|j| {
                        let label = elasticjob_operator::metrics::JobLabel {
                            namespace: j.metadata.namespace.clone().unwrap_or_default(),
                            job: j.metadata.name.clone().unwrap_or_default(),
                        };
                        Some((label, j.status.as_ref()?.goodput.as_ref()?))
                    }));
                }
            })
        },
    };
    let listener = http::bind(args.metrics_addr).with_context(|| {
        format!(
            "cannot serve /metrics on {} (--metrics-addr)",
            args.metrics_addr
        )
    })?;
    let server = tokio::spawn(http::serve(listener, health));
    info!(addr = %args.metrics_addr, "serving /metrics, /healthz, /readyz");
    let scope = match &args.namespace {
        Some(ns) => Scope::Namespace(ns.clone()),
        None => Scope::All,
    };
    // Filled from now on, on a standby too, so that taking over costs no relist.
    let caches = Caches::start(&client, &scope, &metrics).await;
    let mut lease: Option<leader::Leadership> = None;
    if args.leader_elect {
        let timing = leader::LeaseTiming::new(
            args.leader_elect_lease_duration,
            args.leader_elect_renew_grace,
        )?;
        // A standby is ready: it serves and can take over. (Were it not, a rolling update, which
        // waits for the new pod to be ready before stopping the old leader, would never finish.)
        ready.store(true, std::sync::atomic::Ordering::SeqCst);
        let leadership = leader::acquire(
            lease_client,
            &args.lease_namespace,
            &args.lease_name,
            &identity,
            timing,
        )
        .await
        .context("leader election")?;
        ready.store(false, std::sync::atomic::Ordering::SeqCst);
        metrics.leader.set(1);
        lease = Some(leadership);
    } else {
        metrics.leader.set(1);
    }
    info!(?scope, launcher_image = ?args.launcher_image, "starting the controller");
    let settings = Settings {
        launcher_image: args.launcher_image,
        cluster_domain: args.cluster_domain,
    };
    let reporter = Reporter {
        controller: "elasticjob-operator".into(),
        instance: Some(identity),
    };
    let cfg = controller::RunConfig {
        scope,
        settings,
        reporter,
        concurrency: args.concurrency,
    };
    let run = controller::run(client, caches, cfg, metrics, ready, move |s| {
        let _ = store.set(s);
    });
    tokio::select! {
        _ = run => info!("controller stopped"),
        r = server => {
            let e = match r {
                Ok(Ok(())) => anyhow::anyhow!("the metrics server stopped"),
                Ok(Err(e)) => anyhow::Error::new(e).context(format!("serving on {}", args.metrics_addr)),
                Err(e) => anyhow::Error::new(e),
            };
            return Err(e);
        }
        _ = async {
            match lease.as_mut() {
                Some(l) => while l.held.changed().await.is_ok() && *l.held.borrow() {},
                None => std::future::pending().await,
            }
        } => {
            error!("lost the leader lease; exiting so a standby can take over");
            std::process::exit(1);
        }
        signal = shutdown_signal() => {
            info!(%signal, "shutting down");
            if let Some(l) = lease {
                l.release().await;
            }
        }
    }
    Ok(())
}

/// SIGTERM (the pod is being deleted) or SIGINT.
async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = tokio::signal::ctrl_c() => "SIGINT",
    }
}

fn hostname_or_pid() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| std::process::id().to_string())
}
