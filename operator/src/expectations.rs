//! What the operator's own pod writes should look like in the pod cache, until the cache shows
//! them (Kubernetes' ReplicaSet controller calls these "expectations").
//!
//! A create or delete returns before its watch event reaches the cache. A reconcile that ran
//! on the cache in between would see a pod it just created as missing (and create it again: a
//! harmless 409, but at 64 pods a job that is 63 POSTs and 63 GETs per pod event) or a pod it
//! just deleted as still running. So each write the operator makes is remembered here with the
//! pod's UID, and a job is not planned while one of its writes is not yet in the cache: the
//! watch event that shows it triggers the job again. An expectation the cache may never show
//! (a pod created and deleted again before the cache saw it) lapses after [`TTL`]; after that
//! the job is planned as before, which is safe because every write is idempotent (deterministic
//! names, UID preconditions on deletes), only more costly.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// A job: its namespace and name (the pod label `elasticjob.dev/job-name`).
pub type JobKey = (String, String);

/// How long an expectation is waited for. A watch event normally arrives within a second;
/// this is the bound for a cache that will never show the write (see the module doc), long
/// enough for a congested apiserver, short enough that such a job is not stuck for long.
pub const TTL: Duration = Duration::from_secs(30);

/// What the cache should show of a pod the operator wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Created: the cache holds the pod with this UID.
    Created,
    /// Deleted gracefully: the pod with this UID is being deleted or gone.
    Deleting,
    /// Deleted with grace period 0: the pod with this UID is gone.
    Gone,
}

/// What the cache holds under a pod name: the pod's UID and whether it is being deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cached<'a> {
    pub uid: &'a str,
    pub deleting: bool,
}

impl Expect {
    /// Whether a cache holding `cached` under the pod's name shows the write on pod `uid`.
    pub fn shown_by(self, uid: &str, cached: Option<Cached<'_>>) -> bool {
        let same = cached.filter(|c| c.uid == uid);
        match self {
            Expect::Created => same.is_some(),
            Expect::Deleting => same.is_none_or(|c| c.deleting),
            Expect::Gone => same.is_none(),
        }
    }
}

#[derive(Debug, Clone)]
struct Pending {
    pod: String,
    uid: String,
    what: Expect,
    at: Instant,
    /// Order of recording: a relist that began after it was recorded is newer than the write.
    seq: u64,
}

/// The writes not yet seen in the cache, by job.
#[derive(Debug, Default)]
pub struct Expectations {
    pending: HashMap<JobKey, Vec<Pending>>,
    next_seq: u64,
}

impl Expectations {
    /// Remembers a write on pod `pod` (UID `uid`) of `job`, unless `cached` (what the cache holds
    /// under that name now) shows it already: its watch event can arrive before the write's
    /// response does.
    pub fn expect(
        &mut self,
        job: JobKey,
        pod: &str,
        uid: &str,
        what: Expect,
        cached: Option<Cached<'_>>,
        now: Instant,
    ) {
        if what.shown_by(uid, cached) {
            return;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let list = self.pending.entry(job).or_default();
        list.retain(|p| p.pod != pod);
        list.push(Pending {
            pod: pod.to_string(),
            uid: uid.to_string(),
            what,
            at: now,
            seq,
        });
        // Jobs deleted while they had an expectation would otherwise keep it forever.
        self.pending.retain(|_, list| {
            list.retain(|p| now.duration_since(p.at) < TTL);
            !list.is_empty()
        });
    }

    /// The cache now holds `cached` under pod name `pod` of `job` (after a watch event):
    /// drops the expectations on that pod that it shows.
    pub fn observe(&mut self, job: &JobKey, pod: &str, cached: Option<Cached<'_>>) {
        if let Some(list) = self.pending.get_mut(job) {
            list.retain(|p| p.pod != pod || !p.what.shown_by(&p.uid, cached));
            if list.is_empty() {
                self.pending.remove(job);
            }
        }
    }

    /// The sequence number the next expectation gets: a relist that starts now is newer than
    /// every write recorded before it.
    pub fn mark(&self) -> u64 {
        self.next_seq
    }

    /// After a relist that started at `mark`: the list (a quorum read) is newer than every
    /// write recorded before `mark`, so those are shown or moot; the others are checked against
    /// the relisted cache (`lookup`: what it holds under a job's pod name).
    pub fn relisted<'a>(
        &mut self,
        mark: u64,
        lookup: impl Fn(&JobKey, &str) -> Option<Cached<'a>>,
    ) {
        self.pending.retain(|job, list| {
            list.retain(|p| p.seq >= mark && !p.what.shown_by(&p.uid, lookup(job, &p.pod)));
            !list.is_empty()
        });
    }

    /// The pods of `job` whose writes the cache does not show yet (those older than [`TTL`]
    /// are dropped).
    pub fn unmet(&mut self, job: &JobKey, now: Instant) -> Vec<String> {
        let Some(list) = self.pending.get_mut(job) else {
            return Vec::new();
        };
        list.retain(|p| now.duration_since(p.at) < TTL);
        let out: Vec<String> = list.iter().map(|p| p.pod.clone()).collect();
        if list.is_empty() {
            self.pending.remove(job);
        }
        out
    }

    /// Forgets every expectation of `job` (it is being deleted).
    pub fn forget(&mut self, job: &JobKey) {
        self.pending.remove(job);
    }

    /// Jobs with expectations (for tests and metrics).
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> JobKey {
        ("ml".into(), "train".into())
    }

    fn c(uid: &str, deleting: bool) -> Option<Cached<'_>> {
        Some(Cached { uid, deleting })
    }

    #[test]
    fn what_shows_a_write() {
        assert!(Expect::Created.shown_by("u1", c("u1", false)));
        assert!(!Expect::Created.shown_by("u1", None));
        assert!(
            !Expect::Created.shown_by("u1", c("u0", false)),
            "an older pod of that name"
        );
        assert!(Expect::Deleting.shown_by("u1", c("u1", true)));
        assert!(Expect::Deleting.shown_by("u1", None));
        assert!(
            Expect::Deleting.shown_by("u1", c("u2", false)),
            "replaced by a newer pod"
        );
        assert!(!Expect::Deleting.shown_by("u1", c("u1", false)));
        assert!(!Expect::Gone.shown_by("u1", c("u1", true)));
        assert!(Expect::Gone.shown_by("u1", None));
    }

    #[test]
    fn a_creation_is_awaited_until_its_event_arrives() {
        let t0 = Instant::now();
        let mut e = Expectations::default();
        e.expect(job(), "train-worker-0", "u1", Expect::Created, None, t0);
        e.expect(job(), "train-worker-1", "u2", Expect::Created, None, t0);
        assert_eq!(e.unmet(&job(), t0), ["train-worker-0", "train-worker-1"]);
        e.observe(&job(), "train-worker-0", c("u1", false));
        assert_eq!(e.unmet(&job(), t0), ["train-worker-1"]);
        e.observe(&job(), "train-worker-1", c("u2", false));
        assert!(e.unmet(&job(), t0).is_empty());
        assert!(e.is_empty());
    }

    #[test]
    fn an_event_that_came_before_the_response_is_not_awaited() {
        let mut e = Expectations::default();
        let t0 = Instant::now();
        e.expect(job(), "p", "u1", Expect::Created, c("u1", false), t0);
        e.expect(job(), "q", "u2", Expect::Deleting, c("u2", true), t0);
        assert!(e.is_empty());
    }

    #[test]
    fn a_graceful_delete_is_shown_by_the_deletion_timestamp_a_forced_one_by_absence() {
        let t0 = Instant::now();
        let mut e = Expectations::default();
        e.expect(job(), "p", "u1", Expect::Deleting, c("u1", false), t0);
        e.expect(job(), "q", "u2", Expect::Gone, c("u2", true), t0);
        e.observe(&job(), "p", c("u1", true));
        e.observe(&job(), "q", c("u2", true));
        assert_eq!(e.unmet(&job(), t0), ["q"]);
        e.observe(&job(), "q", None);
        assert!(e.unmet(&job(), t0).is_empty());
    }

    #[test]
    fn an_expectation_lapses_after_the_ttl() {
        let t0 = Instant::now();
        let mut e = Expectations::default();
        e.expect(job(), "p", "u1", Expect::Created, None, t0);
        assert_eq!(e.unmet(&job(), t0 + TTL / 2), ["p"]);
        assert!(e.unmet(&job(), t0 + TTL).is_empty());
        assert!(e.is_empty());
    }

    #[test]
    fn a_relist_shows_every_write_made_before_it_started() {
        let t0 = Instant::now();
        let mut e = Expectations::default();
        e.expect(job(), "p", "u1", Expect::Created, None, t0);
        let mark = e.mark();
        e.expect(job(), "q", "u2", Expect::Created, None, t0);
        e.expect(job(), "r", "u3", Expect::Created, None, t0);
        // The list (begun at `mark`) shows r but not q, and p was created and deleted since.
        e.relisted(mark, |_, pod| {
            (pod == "r").then_some(Cached {
                uid: "u3",
                deleting: false,
            })
        });
        assert_eq!(e.unmet(&job(), t0), ["q"]);
    }

    #[test]
    fn other_jobs_are_not_held_up_and_a_deleted_job_is_forgotten() {
        let t0 = Instant::now();
        let mut e = Expectations::default();
        let other: JobKey = ("ml".into(), "other".into());
        e.expect(job(), "p", "u1", Expect::Created, None, t0);
        assert!(e.unmet(&other, t0).is_empty());
        e.forget(&job());
        assert!(e.is_empty());
    }
}
