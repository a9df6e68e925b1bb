//! Leader election through a Lease (kube-lease-manager): with `--leader-elect`, only the
//! replica holding the Lease reconciles; the others wait. A leader that loses the Lease exits,
//! so that its Deployment restarts it as a standby (the usual controller-runtime behaviour: no
//! two replicas ever reconcile at once). A leader that is stopped releases the Lease first.

use std::time::Duration;

use kube::Client;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder, LeaseManagerError, LeaseParams};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// Lease timing: held for 15 s, renewed well before it lapses.
const LEASE_SECONDS: u64 = 15;
const GRACE_SECONDS: u64 = 5;

/// The Lease this replica holds.
pub struct Leadership {
    /// Turns false when the Lease is lost.
    pub held: watch::Receiver<bool>,
    task: JoinHandle<Result<LeaseManager, LeaseManagerError>>,
}

impl Leadership {
    /// Gives the Lease up now (on shutdown), so a standby takes over at once instead of after
    /// the Lease lapses.
    pub async fn release(self) {
        // The manager's task releases the Lease once its channel has no receiver.
        drop(self.held);
        match tokio::time::timeout(Duration::from_secs(5), self.task).await {
            Ok(Ok(Ok(_))) => info!("released the leader lease"),
            Ok(Ok(Err(e))) => warn!(error = %e, "could not release the leader lease"),
            Ok(Err(e)) => warn!(error = %e, "the lease task failed"),
            Err(_) => warn!("releasing the leader lease took more than 5 s; it will lapse"),
        }
    }
}

/// Waits until this replica holds the Lease `name` in `namespace`.
pub async fn acquire(
    client: Client,
    namespace: &str,
    name: &str,
    identity: &str,
) -> Result<Leadership, LeaseManagerError> {
    let manager = LeaseManagerBuilder::new(client, name)
        .with_namespace(namespace)
        .with_identity(identity)
        .with_parameters(LeaseParams::new(identity, LEASE_SECONDS, GRACE_SECONDS))
        .build()
        .await?;
    let (mut held, task) = manager.watch().await;
    info!(lease = %name, %namespace, %identity, "waiting for the leader lease");
    while !*held.borrow_and_update() {
        if held.changed().await.is_err() {
            break;
        }
    }
    info!(lease = %name, %identity, "acquired the leader lease");
    // Let the first renewal settle before reconciling.
    tokio::time::sleep(Duration::from_millis(100)).await;
    Ok(Leadership { held, task })
}
