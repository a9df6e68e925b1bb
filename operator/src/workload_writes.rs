//! This process's recent writes to each job's Workloads, which decide where a reconcile reads
//! them from: the Workload cache ([`crate::caches`]), or a LIST.
//!
//! At 1,000 running jobs under Kueue, a LIST of each job's Workloads on every reconcile (a
//! running job is looked at every minute) is 1,000 quorum reads a minute from etcd, each
//! scanning the namespace's Workloads. The cache serves them instead, except right after this
//! process wrote one of the job's Workloads.
//!
//! # Why reading the cache is exact
//!
//! The cache can differ from a LIST in two ways:
//!
//! - **It lags other writers** (Kueue admitting, evicting or finishing a slice; a user). So
//!   does a LIST by the time its result is acted on: every write the operator makes from what
//!   it read is guarded against a Workload that changed since (a delete has a UID
//!   precondition, a status patch the resourceVersion it read, a create a deterministic name
//!   and a 409). A refused write is retried by the reconcile that the change's watch event
//!   triggers, and the cache is written before that event wakes the job, so that reconcile
//!   sees the change. The cache never goes back in time: its relists are quorum reads.
//! - **It lags this process's own writes**, and acting on a view older than its own write is
//!   not harmless: a Workload it just deleted looks current and one it just made looks
//!   missing, so it could ask the queue twice (the delete seen, the create that followed not:
//!   another is made under the deleted one's index, and both may be given quota until a later
//!   reconcile deletes one), or delete or patch again from a stale view. So a job whose
//!   Workloads this process wrote within [`TTL`] reads them with a LIST, a quorum read newer
//!   than the write, as every reconcile did before the cache. Writes are rare (admission
//!   transitions: the first ask, a new ask, a slice, giving quota back, marking pods
//!   reclaimable, finishing), so a running job's periodic reconcile reads the cache.
//!
//! The same holds for the leader before this one: for [`TTL`] after this process starts
//! reconciling, every job lists. After [`TTL`] the watch has delivered the write unless it lags
//! by more than that (the bound the pods' expectations use too, [`crate::expectations`]); the
//! guards above still hold then, and a Workload asked for twice is deleted by the next
//! reconcile (`kueue::standing` keeps the newest).
//!
//! Expectations like the pods' (waiting until the cache shows each write) would read the cache
//! sooner after a write, but a status patch is shown only by the exact resourceVersion it
//! returned, which Kueue's next write (often within milliseconds) replaces; the time bound is
//! simpler and costs a LIST per reconcile for [`TTL`] after a write, when a job changes anyway.

use std::collections::HashMap;
use std::time::Instant;

use crate::expectations::{JobKey, TTL};

/// Where a reconcile reads its job's Workloads from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The Workload cache.
    Cache,
    /// A LIST: the cache may not show a recent write yet.
    List,
}

/// Where to read a job's Workloads from at `now`, given this process's last write to them
/// (if any) and when it started reconciling (a leader before it may have written them).
pub fn source(last_write: Option<Instant>, reconciling_since: Instant, now: Instant) -> Source {
    let recent = |at: Instant| now.saturating_duration_since(at) < TTL;
    if recent(reconciling_since) || last_write.is_some_and(recent) {
        Source::List
    } else {
        Source::Cache
    }
}

/// The last write of this process to each job's Workloads (within [`TTL`]).
#[derive(Debug)]
pub struct Writes {
    since: Instant,
    last: HashMap<JobKey, Instant>,
}

impl Writes {
    /// No writes yet; this process reconciles from `since`.
    pub fn new(since: Instant) -> Writes {
        Writes {
            since,
            last: HashMap::new(),
        }
    }

    /// Remembers a write (or an attempt: a request that failed may still have been applied)
    /// to one of `job`'s Workloads.
    pub fn record(&mut self, job: JobKey, now: Instant) {
        // Jobs deleted without a reconcile seeing it would otherwise stay forever.
        self.last
            .retain(|_, at| now.saturating_duration_since(*at) < TTL);
        self.last.insert(job, now);
    }

    /// Where to read `job`'s Workloads from at `now`.
    pub fn source(&self, job: &JobKey, now: Instant) -> Source {
        source(self.last.get(job).copied(), self.since, now)
    }

    /// Forgets `job` (it is being deleted).
    pub fn forget(&mut self, job: &JobKey) {
        self.last.remove(job);
    }

    /// Jobs with a write remembered (for tests).
    pub fn len(&self) -> usize {
        self.last.len()
    }

    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn job(name: &str) -> JobKey {
        ("ml".into(), name.into())
    }

    #[test]
    fn a_job_lists_its_workloads_until_its_last_write_is_older_than_the_ttl() {
        let t0 = Instant::now();
        let started = t0;
        let later = t0 + TTL + Duration::from_secs(1);
        assert_eq!(source(None, started, later), Source::Cache);
        assert_eq!(source(Some(later), started, later), Source::List);
        assert_eq!(
            source(Some(later), started, later + TTL - Duration::from_millis(1)),
            Source::List
        );
        assert_eq!(source(Some(later), started, later + TTL), Source::Cache);
    }

    #[test]
    fn every_job_lists_for_the_ttl_after_the_process_starts_reconciling() {
        let t0 = Instant::now();
        assert_eq!(source(None, t0, t0), Source::List);
        assert_eq!(source(None, t0, t0 + TTL / 2), Source::List);
        assert_eq!(source(None, t0, t0 + TTL), Source::Cache);
    }

    #[test]
    fn writes_are_remembered_per_job_and_forgotten() {
        let t0 = Instant::now();
        let mut w = Writes::new(t0);
        let t1 = t0 + TTL;
        assert_eq!(w.source(&job("a"), t1), Source::Cache);
        w.record(job("a"), t1);
        assert_eq!(w.source(&job("a"), t1), Source::List);
        assert_eq!(
            w.source(&job("b"), t1),
            Source::Cache,
            "other jobs read the cache"
        );
        w.forget(&job("a"));
        assert_eq!(w.source(&job("a"), t1), Source::Cache);
        assert!(w.is_empty());
    }

    #[test]
    fn old_writes_are_dropped_when_a_new_one_is_recorded() {
        let t0 = Instant::now();
        let mut w = Writes::new(t0);
        w.record(job("gone"), t0);
        w.record(job("a"), t0 + TTL);
        assert_eq!(w.len(), 1);
        assert_eq!(w.source(&job("a"), t0 + TTL), Source::List);
    }
}
