//! Leader election through a Lease (kube-lease-manager): with `--leader-elect`, only the
//! replica holding the Lease reconciles; the others wait. A leader that loses the Lease exits,
//! so that its Deployment restarts it as a standby (the usual controller-runtime behaviour: no
//! two replicas ever reconcile at once).

use std::time::Duration;

use kube::Client;
use kube_lease_manager::{LeaseManagerBuilder, LeaseParams};
use tokio::sync::watch;
use tracing::info;

/// Lease timing: held for 15 s, renewed well before it lapses.
const LEASE_SECONDS: u64 = 15;
const GRACE_SECONDS: u64 = 5;

/// Waits until this replica holds the Lease `name` in `namespace`; returns a receiver that turns
/// false when the Lease is lost.
pub async fn acquire(
    client: Client,
    namespace: &str,
    name: &str,
    identity: &str,
) -> Result<watch::Receiver<bool>, kube_lease_manager::LeaseManagerError> {
    let manager = LeaseManagerBuilder::new(client, name)
        .with_namespace(namespace)
        .with_identity(identity)
        .with_parameters(LeaseParams::new(identity, LEASE_SECONDS, GRACE_SECONDS))
        .build()
        .await?;
    let (mut rx, _task) = manager.watch().await;
    info!(lease = %name, %namespace, %identity, "waiting for the leader lease");
    while !*rx.borrow_and_update() {
        if rx.changed().await.is_err() {
            break;
        }
    }
    info!(lease = %name, %identity, "acquired the leader lease");
    // Let the first renewal settle before reconciling.
    tokio::time::sleep(Duration::from_millis(100)).await;
    Ok(rx)
}
