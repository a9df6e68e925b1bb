//! Leader election through a Lease (kube-lease-manager): with `--leader-elect`, only the
//! replica holding the Lease reconciles; the others wait. A leader that loses the Lease exits,
//! so that its Deployment restarts it as a standby (the usual controller-runtime behaviour: no
//! two replicas ever reconcile at once). A leader that is stopped releases the Lease first.
//!
//! A leader that dies without releasing (SIGKILL, a lost node) is replaced once its Lease
//! lapses: a standby sleeps until the Lease's expiry, takes it within a second after, and
//! starts. So failover after a crash takes between `grace` and `duration` seconds (the leader
//! renews `grace` seconds before expiry) plus the start; `bench/failover.sh` measures it.
//!
//! A released Lease is taken at once: kube-lease-manager's standby would sleep until the
//! expiry it last read, so the standby also watches the Lease and, when it shows no holder,
//! starts its manager afresh (a new manager reads the Lease before anything else).

use std::pin::pin;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder, LeaseManagerError, LeaseParams};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

/// How long the Lease holds without renewal, and how long before it lapses the leader renews
/// it: a leader that crashed is replaced after `duration - grace` to `duration` seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTiming {
    pub duration_seconds: u64,
    pub grace_seconds: u64,
}

impl Default for LeaseTiming {
    /// client-go's defaults for controllers (15 s lease, renewed 5 s before it lapses).
    fn default() -> Self {
        LeaseTiming {
            duration_seconds: 15,
            grace_seconds: 5,
        }
    }
}

/// Why a lease timing cannot work.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TimingError {
    #[error(
        "the leader lease duration ({duration} s) must be longer than its renewal grace ({grace} s), by at least 2 s, so the leader renews it before it lapses: raise --leader-elect-lease-duration or lower --leader-elect-renew-grace"
    )]
    GraceTooLong { duration: u64, grace: u64 },
    #[error(
        "the leader lease renewal grace must be at least 1 s (--leader-elect-renew-grace): with none, the Lease lapses while it is renewed"
    )]
    NoGrace,
}

impl LeaseTiming {
    pub fn new(duration_seconds: u64, grace_seconds: u64) -> Result<Self, TimingError> {
        if grace_seconds == 0 {
            return Err(TimingError::NoGrace);
        }
        if duration_seconds < grace_seconds + 2 {
            return Err(TimingError::GraceTooLong {
                duration: duration_seconds,
                grace: grace_seconds,
            });
        }
        Ok(LeaseTiming {
            duration_seconds,
            grace_seconds,
        })
    }
}

/// Why this replica could not wait for the Lease.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error(transparent)]
    Lease(#[from] LeaseManagerError),
    #[error("the lease manager stopped before this replica held the Lease")]
    Stopped,
}

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
    timing: LeaseTiming,
) -> Result<Leadership, LeaderError> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), namespace);
    let by_name = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut released = pin!(
        watcher(leases, by_name)
            .default_backoff()
            .applied_objects()
            .filter_map(|lease| {
                if let Err(e) = &lease {
                    debug!(error = %e, "watching the leader lease");
                }
                futures::future::ready(lease.ok().filter(has_no_holder))
            })
    );
    info!(lease = %name, %namespace, %identity, "waiting for the leader lease");
    loop {
        let manager = LeaseManagerBuilder::new(client.clone(), name)
            .with_namespace(namespace)
            .with_identity(identity)
            .with_parameters(LeaseParams::new(
                identity,
                timing.duration_seconds,
                timing.grace_seconds,
            ))
            .build()
            .await?;
        let (mut held, task) = manager.watch().await;
        tokio::select! {
            acquired = async { held.wait_for(|held| *held).await.is_ok() } => {
                if !acquired {
                    return Err(match task.await {
                        Ok(Err(e)) => e.into(),
                        _ => LeaderError::Stopped,
                    });
                }
                info!(lease = %name, %identity, "acquired the leader lease");
                // Let the first renewal settle before reconciling.
                tokio::time::sleep(Duration::from_millis(100)).await;
                return Ok(Leadership { held, task });
            }
            Some(_) = released.next() => {
                // A standby holds nothing, so stopping its manager mid-step loses nothing: had
                // it just taken the Lease, the next manager (same identity) finds itself the
                // holder.
                task.abort();
                debug!(lease = %name, "the leader lease has no holder; reading it afresh");
            }
        }
    }
}

/// Released (kube-lease-manager clears the holder; client-go leaves it empty).
fn has_no_holder(lease: &Lease) -> bool {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.as_deref())
        .is_none_or(str::is_empty)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_must_be_renewed_before_it_lapses() {
        assert_eq!(LeaseTiming::new(15, 5), Ok(LeaseTiming::default()));
        assert_eq!(LeaseTiming::new(4, 2).map(|t| t.duration_seconds), Ok(4));
        assert_eq!(
            LeaseTiming::new(5, 4),
            Err(TimingError::GraceTooLong {
                duration: 5,
                grace: 4
            })
        );
        assert_eq!(LeaseTiming::new(15, 0), Err(TimingError::NoGrace));
        let msg = LeaseTiming::new(5, 5).unwrap_err().to_string();
        assert!(msg.contains("--leader-elect-lease-duration"), "{msg}");
    }

    #[test]
    fn a_lease_without_a_holder_is_released() {
        use k8s_openapi::api::coordination::v1::LeaseSpec;
        let lease = |holder: Option<&str>| Lease {
            spec: Some(LeaseSpec {
                holder_identity: holder.map(Into::into),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(has_no_holder(&lease(None)));
        assert!(has_no_holder(&lease(Some(""))));
        assert!(has_no_holder(&Lease::default()));
        assert!(!has_no_holder(&lease(Some("op-1"))));
    }
}
