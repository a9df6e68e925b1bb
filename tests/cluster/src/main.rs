//! `cluster up --dir DIR` / `cluster down --dir DIR`: a local Kubernetes control plane.
//! All the logic is in the library (`local_cluster`); this is argument parsing and signals.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use local_cluster::control::{self, Fault};
use local_cluster::{Cluster, ClusterConfig};
use tokio::signal::unix::{SignalKind, signal};

#[derive(Parser)]
#[command(
    about = "A real Kubernetes cluster on this machine: the control plane, CoreDNS, and nodes that are kubelets with their own containerd and runc"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start a cluster in DIR and keep it running until Ctrl-C / SIGTERM / `cluster down`.
    Up {
        /// State dir of this cluster (certs, kubeconfig, etcd data, logs); one per cluster.
        #[arg(long)]
        dir: PathBuf,
        /// Dir with etcd, kube-apiserver, ... (default: what tests/cluster/provision.sh prints).
        #[arg(long, env = "ELASTICJOB_CLUSTER_BIN")]
        bin_dir: Option<PathBuf>,
        /// Service cluster IP range.
        #[arg(long, default_value = "10.96.0.0/16")]
        service_cidr: String,
        /// Seconds between SIGTERM and SIGKILL for each component at shutdown.
        #[arg(long, default_value_t = 10)]
        grace_secs: u64,
        /// klog verbosity of the Kubernetes components.
        #[arg(long, default_value_t = 1)]
        v: u8,
        /// Nodes, each a kubelet with its own containerd and runc (0: a control plane alone).
        #[arg(long, default_value_t = 3)]
        nodes: u32,
        /// OCI image archives (`buildah push IMAGE oci-archive:FILE`) loaded into every node,
        /// comma-separated; pods use them by their names, nothing is pulled
        /// (`tests/cluster/images.sh` prints the project's).
        #[arg(long, env = "ELASTICJOB_CLUSTER_IMAGES", value_delimiter = ',')]
        images: Vec<PathBuf>,
        /// Fake `nvidia.com/gpu` devices per node, and as many `amd.com/gpu` and `habana.ai/gaudi`.
        #[arg(long, default_value_t = 4)]
        gpus_per_node: u32,
    },
    /// Inject a fault into the cluster running from DIR (through its control socket).
    Fault {
        #[arg(long)]
        dir: PathBuf,
        #[command(subcommand)]
        fault: FaultCmd,
    },
    /// Stop the cluster started with `cluster up --dir DIR`.
    Down {
        #[arg(long)]
        dir: PathBuf,
        /// How long to wait for an orderly stop before SIGKILL.
        #[arg(long, default_value_t = 60)]
        timeout_secs: u64,
    },
}

#[derive(Subcommand)]
enum FaultCmd {
    /// Signal every process of a pod's running containers.
    KillPod {
        /// NAMESPACE/NAME or NAME (namespace `default`).
        pod: String,
        #[arg(long, default_value = "KILL")]
        signal: String,
    },
    /// Take a pod's network link down.
    CutNet { pod: String },
    /// Bring a pod's network link back up.
    RestoreNet { pod: String },
    /// Lose a node: its kubelet, containerd and containers die at once (NotReady in ~12 s).
    LoseNode { node: String },
    /// Partition a node: its network is cut, everything of it keeps running.
    PartitionNode { node: String },
    /// Bring a lost or partitioned node back.
    RestoreNode { node: String },
}

fn split_pod(p: &str) -> (String, String) {
    match p.split_once('/') {
        Some((ns, n)) => (ns.to_string(), n.to_string()),
        None => ("default".to_string(), p.to_string()),
    }
}

impl FaultCmd {
    fn to_fault(&self) -> Fault {
        match self {
            FaultCmd::KillPod { pod, signal } => {
                let (namespace, name) = split_pod(pod);
                Fault::KillPod {
                    namespace,
                    name,
                    signal: signal.clone(),
                }
            }
            FaultCmd::CutNet { pod } => {
                let (namespace, name) = split_pod(pod);
                Fault::CutNetwork { namespace, name }
            }
            FaultCmd::RestoreNet { pod } => {
                let (namespace, name) = split_pod(pod);
                Fault::RestoreNetwork { namespace, name }
            }
            FaultCmd::LoseNode { node } => Fault::LoseNode { node: node.clone() },
            FaultCmd::PartitionNode { node } => Fault::PartitionNode { node: node.clone() },
            FaultCmd::RestoreNode { node } => Fault::RestoreNode { node: node.clone() },
        }
    }
}

fn default_bin_dir() -> PathBuf {
    local_cluster::cache_dir().join("cluster/bin")
}

fn absolute(p: PathBuf) -> Result<PathBuf> {
    Ok(if p.is_absolute() {
        p
    } else {
        std::env::current_dir()?.join(p)
    })
}

// Four workers: the control-plane supervision, the nodes' start and the fault socket share them.
#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().cmd {
        Cmd::Up {
            dir,
            bin_dir,
            service_cidr,
            grace_secs,
            v,
            nodes,
            images,
            gpus_per_node,
        } => {
            let dir = absolute(dir)?;
            let bin_dir = absolute(bin_dir.unwrap_or_else(default_bin_dir))?;
            let mut cfg = ClusterConfig::new(&dir, &bin_dir)?;
            cfg.service_cidr = service_cidr;
            cfg.grace = Duration::from_secs(grace_secs);
            cfg.verbosity = v;
            cfg.nodes.count = nodes;
            cfg.nodes.images = images.into_iter().map(absolute).collect::<Result<_>>()?;
            cfg.nodes.gpus_per_node = gpus_per_node;
            // Listen for signals before starting anything, so none is missed.
            let mut term = signal(SignalKind::terminate())?;
            let mut int = signal(SignalKind::interrupt())?;
            let mut cluster = tokio::select! {
                c = Cluster::start(cfg) => c.context("starting the cluster")?,
                _ = term.recv() => bail!("SIGTERM during startup (components were killed)"),
                _ = int.recv() => bail!("interrupted during startup (components were killed)"),
            };
            println!(
                "cluster {} is up: {}",
                cluster.config().name,
                cluster.api_url()
            );
            println!("  export KUBECONFIG={}", cluster.kubeconfig().display());
            println!(
                "  export PATH={}:$PATH   # kubectl, helm",
                bin_dir.display()
            );
            println!("  kubectl get --raw /readyz; kubectl get nodes");
            let _control = match cluster.nodes() {
                Some(f) => Some(control::serve(&dir, f).context("control socket")?),
                None => None,
            };
            println!("logs: {}", cluster.layout().logs().display());
            println!(
                "faults: `cluster fault --dir {} kill-pod|cut-net|restore-net NS/POD | lose-node|partition-node|restore-node NODE`",
                dir.display()
            );
            println!("stop: Ctrl-C, or `cluster down --dir {}`", dir.display());
            let crashed = tokio::select! {
                _ = term.recv() => None,
                _ = int.recv() => None,
                (c, why) = cluster.wait_for_exit() => Some((c, why)),
            };
            eprintln!("stopping cluster {} ...", cluster.config().name);
            cluster.shutdown().await.context("stopping the cluster")?;
            eprintln!("stopped; no process left");
            if let Some((c, why)) = crashed {
                bail!("{c} exited unexpectedly: {why}");
            }
            Ok(())
        }
        Cmd::Fault { dir, fault } => {
            let dir = absolute(dir)?;
            let done = control::send(&dir, &fault.to_fault())
                .await
                .map_err(anyhow::Error::msg)?;
            println!("{done}");
            Ok(())
        }
        Cmd::Down { dir, timeout_secs } => {
            let dir = absolute(dir)?;
            local_cluster::down(&dir, Duration::from_secs(timeout_secs)).await?;
            eprintln!("cluster in {} stopped", dir.display());
            Ok(())
        }
    }
}
