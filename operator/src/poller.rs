//! Gathers the launchers' progress outside the reconcile, so a reconcile reads it from memory
//! and never waits on the network.
//!
//! The reconcile says which pods of a job to read ([`Poller::track`]) and reads their latest
//! progress ([`Poller::fill`]). A background task reads each tracked pod's `/status` once per
//! interval, at a moment in the interval taken from its UID (so a job's pods, and all the pods
//! of the operator, are spread over the interval instead of read at once), with a bounded
//! number of reads in flight over kept-alive connections ([`crate::poll`]). A pod that does not
//! answer is read again after a backoff that doubles up to a cap, and such pods get only a
//! small share of the reads in flight: a job whose launchers cannot be reached (a network
//! policy, a launcher without a status port) costs a read every few minutes per pod, and never
//! slows the reads of the others. When a read changes what the job's status would show, the
//! job is reconciled (the trigger stream [`Poller::start`] returns feeds `Controller::reconcile_on`), at most once per
//! gap: one second for a change of state, round, world size, restarts or stalls, 30 s for the
//! workers' training progress alone (it changes at nearly every read).
//!
//! The decisions (when to read, how long to back off, what is a change, when to trigger) are
//! pure functions and a plain state book ([`Book`]) with the time passed in; the task around
//! them is the only IO.

use std::collections::{BTreeMap, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::channel::mpsc;
use kube::runtime::reflector::ObjectRef;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tracing::debug;

use elasticjob_contract::progress::Progress;
use elasticjob_crds::spec::ElasticJob;

use crate::metrics::Metrics;
use crate::observed::ObservedPod;
use crate::poll::{LauncherClient, Outcome};

pub type JobRef = ObjectRef<ElasticJob>;

/// How the poller paces itself.
#[derive(Debug, Clone)]
pub struct PollerConfig {
    /// How often each answering launcher is read.
    pub interval: Duration,
    /// A newly tracked pod is first read within this (spread by UID), not an interval later.
    pub first_within: Duration,
    /// The longest wait between two reads of a pod that does not answer.
    pub max_backoff: Duration,
    /// How long one read may take.
    pub timeout: Duration,
    /// Reads in flight at once, all pods together.
    pub concurrency: usize,
    /// Of those, reads of pods that did not answer the last two times: they often wait out
    /// the timeout, and must not crowd out the launchers that answer. (A pod that missed once,
    /// often a launcher still starting, is read again with the others, not behind them.)
    pub backoff_concurrency: usize,
    /// The least time between two triggers of a job for a change of a launcher's state,
    /// round, world size, restarts or stalls, or a launcher that starts or stops answering.
    pub state_gap: Duration,
    /// The same for a change of the workers' training progress alone.
    pub progress_gap: Duration,
}

impl Default for PollerConfig {
    fn default() -> Self {
        let interval = Duration::from_secs(10);
        PollerConfig {
            interval,
            first_within: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
            timeout: crate::poll::TIMEOUT,
            concurrency: 64,
            backoff_concurrency: 16,
            state_gap: Duration::from_secs(1),
            // The step and loss in the status stay within half a minute; at 1,000 training
            // jobs that is 33 status writes a second, not 100.
            progress_gap: Duration::from_secs(30),
        }
    }
}

/// A pod to read: its launcher's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub pod_uid: String,
    pub ip: String,
    pub port: i32,
}

/// The pods worth reading: running (not being deleted), with a UID and an IP.
pub fn targets(pods: &[ObservedPod], port: i32) -> Vec<Target> {
    pods.iter()
        .filter(|p| p.is_running())
        .filter_map(|p| {
            Some(Target {
                pod_uid: p.uid.clone()?,
                ip: p.ip.clone()?,
                port,
            })
        })
        .collect()
}

/// Where in a span of `within` a pod's reads fall: from its UID, so pods spread evenly and a
/// pod keeps its place.
pub fn spread(uid: &str, within: Duration) -> Duration {
    let span = within.as_nanos() as u64;
    if span == 0 {
        return Duration::ZERO;
    }
    let mut h = DefaultHasher::new();
    uid.hash(&mut h);
    Duration::from_nanos(h.finish() % span)
}

/// The wait before the next read of a pod after `failures` reads in a row that got no answer:
/// one interval, then doubling, up to `max`.
pub fn backoff(failures: u32, interval: Duration, max: Duration) -> Duration {
    let doublings = failures.saturating_sub(1).min(31);
    interval
        .checked_mul(1 << doublings)
        .unwrap_or(Duration::MAX)
        .min(max.max(interval))
}

/// When to read a pod again whose last read started at `started`, to wait about `delay`: the
/// first of the pod's places (`phase` + k × `interval`) from half an interval before `delay` is
/// up. A read on time is followed by one exactly `delay` later; a late one (the reads in flight
/// were full) does not make the next one late or early, and never a burst of catch-ups.
pub fn next_due(
    started: Duration,
    delay: Duration,
    phase: Duration,
    interval: Duration,
) -> Duration {
    let earliest = (started + delay).saturating_sub(interval / 2);
    if earliest <= phase || interval.is_zero() {
        return earliest.max(phase);
    }
    let periods = (earliest - phase).as_nanos().div_ceil(interval.as_nanos());
    phase + Duration::from_nanos((periods * interval.as_nanos()).min(u64::MAX as u128) as u64)
}

/// How much a new read changes what the job's status shows (`status.launchers`,
/// `workerRestarts`, `progress`, the Stalled condition, goodput).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Change {
    None,
    /// Only the workers' training progress (step, metrics, rate): moves at nearly every read.
    Progress,
    /// The launcher's state, round, world size, restarts or stalls; or it started or stopped
    /// answering (a pod counts as training only while its launcher answers `Running`).
    State,
}

pub fn change(old: Option<&Progress>, new: Option<&Progress>) -> Change {
    match (old, new) {
        (None, None) => Change::None,
        (Some(o), Some(n)) => {
            let shown = |p: &Progress| {
                (
                    p.state,
                    p.round,
                    p.world_size,
                    p.restart_count,
                    p.stalls,
                    p.last_stall.as_ref().map(|s| (s.round, s.at.to_bits())),
                )
            };
            if shown(o) != shown(n) {
                Change::State
            } else if o.training != n.training {
                Change::Progress
            } else {
                Change::None
            }
        }
        _ => Change::State,
    }
}

/// When the controller should hear of a change that needs `gap` since the job's last trigger
/// (`last`): now if that is past, else once it is; never later than a trigger already pending.
pub fn trigger_at(
    last: Option<Duration>,
    pending: Option<Duration>,
    now: Duration,
    gap: Duration,
) -> Duration {
    let at = last.map_or(now, |l| (l + gap).max(now));
    pending.map_or(at, |p| p.min(at))
}

/// Reads missed in a row after which a pod's reads go under the backoff share.
const BACKING_OFF_AFTER: u32 = 2;

/// A place in a schedule: its time, and a sequence number that makes it unique.
type Slot = (Duration, u64);

struct PodEntry {
    job: Arc<JobRef>,
    ip: String,
    port: i32,
    /// Its place in the schedule; None while it is being read.
    due: Option<Slot>,
    /// Reads in a row that got no answer.
    failures: u32,
    latest: Option<Progress>,
    /// Which tracking this is: a read that finishes after its pod was untracked (and maybe
    /// tracked again) is dropped.
    id: u64,
}

#[derive(Default)]
struct JobEntry {
    uids: Vec<Arc<str>>,
    last_trigger: Option<Duration>,
    pending: Option<Slot>,
}

/// A read to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    pub uid: Arc<str>,
    pub id: u64,
    pub ip: String,
    pub port: i32,
    /// Whether the pod did not answer the last times (it reads under the backoff share).
    pub backing_off: bool,
    pub started: Duration,
}

/// What the poller knows, and its schedule. Plain data; every time is since the poller's start
/// and passed in.
#[derive(Default)]
pub struct Book {
    pods: HashMap<Arc<str>, PodEntry>,
    jobs: HashMap<Arc<JobRef>, JobEntry>,
    /// Pods that answered (or missed once, or were never read), by when they are due.
    answering: BTreeMap<Slot, Arc<str>>,
    /// Pods that missed [`BACKING_OFF_AFTER`] reads in a row or more, by when they are due.
    backing_off: BTreeMap<Slot, Arc<str>>,
    triggers: BTreeMap<Slot, Arc<JobRef>>,
    seq: u64,
    in_backoff: usize,
}

impl Book {
    fn slot(&mut self, at: Duration) -> Slot {
        self.seq += 1;
        (at, self.seq)
    }

    fn schedule(&mut self, uid: &Arc<str>, at: Duration) {
        let slot = self.slot(at);
        let Some(entry) = self.pods.get_mut(uid) else {
            return;
        };
        entry.due = Some(slot);
        let queue = if entry.failures >= BACKING_OFF_AFTER {
            &mut self.backing_off
        } else {
            &mut self.answering
        };
        queue.insert(slot, uid.clone());
    }

    fn unschedule(&mut self, uid: &str) {
        if let Some(slot) = self.pods.get_mut(uid).and_then(|e| e.due.take()) {
            self.answering.remove(&slot);
            self.backing_off.remove(&slot);
        }
    }

    fn remove_pod(&mut self, uid: &str) {
        self.unschedule(uid);
        if let Some(entry) = self.pods.remove(uid)
            && entry.failures > 0
        {
            self.in_backoff -= 1;
        }
    }

    /// Makes `targets` the pods read for `job`: new ones are read within `first_within`, ones
    /// already tracked keep their place, the others are forgotten. No targets: the job is
    /// forgotten.
    pub fn track(&mut self, job: &JobRef, targets: Vec<Target>, now: Duration, cfg: &PollerConfig) {
        if targets.is_empty() {
            self.forget(job);
            return;
        }
        let job_ref = match self.jobs.get_key_value(job) {
            Some((k, _)) => k.clone(),
            None => {
                let k = Arc::new(job.clone());
                self.jobs.insert(k.clone(), JobEntry::default());
                k
            }
        };
        let old = std::mem::take(&mut self.jobs.get_mut(&job_ref).expect("just added").uids);
        for uid in old {
            if !targets.iter().any(|t| *t.pod_uid == *uid) {
                self.remove_pod(&uid);
            }
        }
        let mut uids = Vec::with_capacity(targets.len());
        for t in targets {
            let (uid, same, holder) = match self.pods.get_key_value(t.pod_uid.as_str()) {
                Some((k, e)) => (
                    k.clone(),
                    Some((e.job == job_ref, e.ip == t.ip && e.port == t.port)),
                    Some(e.job.clone()),
                ),
                None => (Arc::from(t.pod_uid.as_str()), None, None),
            };
            match same {
                Some((true, true)) => {}
                Some((true, false)) => {
                    // A new address (the status port changed): read it soon, afresh.
                    self.unschedule(&uid);
                    let entry = self.pods.get_mut(&uid).expect("known");
                    let was_failing = entry.failures > 0;
                    (entry.ip, entry.port, entry.failures) = (t.ip, t.port, 0);
                    if was_failing {
                        self.in_backoff -= 1;
                    }
                    self.schedule(&uid, now + spread(&uid, cfg.first_within));
                }
                Some((false, _)) | None => {
                    // (Another job's pod cannot be, UIDs are unique; if it were, it is this
                    // job's now.)
                    if let Some(other) = holder {
                        if let Some(j) = self.jobs.get_mut(&other) {
                            j.uids.retain(|u| *u != uid);
                        }
                        self.remove_pod(&uid);
                    }
                    self.seq += 1;
                    let entry = PodEntry {
                        job: job_ref.clone(),
                        ip: t.ip,
                        port: t.port,
                        due: None,
                        failures: 0,
                        latest: None,
                        id: self.seq,
                    };
                    self.pods.insert(uid.clone(), entry);
                    self.schedule(&uid, now + spread(&uid, cfg.first_within));
                }
            }
            uids.push(uid);
        }
        self.jobs.get_mut(&job_ref).expect("just added").uids = uids;
    }

    /// Stops reading the pods of `job` and forgets them.
    pub fn forget(&mut self, job: &JobRef) {
        let Some(entry) = self.jobs.remove(job) else {
            return;
        };
        if let Some(slot) = entry.pending {
            self.triggers.remove(&slot);
        }
        for uid in entry.uids {
            self.remove_pod(&uid);
        }
    }

    /// Up to `answering` reads that are due at `now` of pods that answered last time, and up to
    /// `backing_off` of pods that did not (within `answering` in all), earliest first; their
    /// pods are marked as being read. A pod of a job that no longer `exists` is forgotten with
    /// its job.
    pub fn due(
        &mut self,
        now: Duration,
        answering: usize,
        backing_off: usize,
        exists: &dyn Fn(&JobRef) -> bool,
    ) -> Vec<Read> {
        let mut reads = Vec::new();
        let mut budget = (answering, backing_off.min(answering));
        loop {
            let first_due = |q: &BTreeMap<Slot, Arc<str>>| {
                q.first_key_value()
                    .filter(|(slot, _)| slot.0 <= now)
                    .map(|(slot, uid)| (*slot, uid.clone()))
            };
            let next = if budget.0 > 0 {
                first_due(&self.answering).map(|n| (n, false))
            } else {
                None
            }
            .or_else(|| {
                (budget.0 > 0 && budget.1 > 0)
                    .then(|| first_due(&self.backing_off).map(|n| (n, true)))
                    .flatten()
            });
            let Some(((slot, uid), backing_off)) = next else {
                break;
            };
            self.answering.remove(&slot);
            self.backing_off.remove(&slot);
            let Some(entry) = self.pods.get_mut(&uid) else {
                continue;
            };
            entry.due = None;
            if !exists(&entry.job) {
                let job = entry.job.clone();
                debug!(job = %job, "the job is gone; its pods are no longer read");
                self.forget(&job);
                continue;
            }
            reads.push(Read {
                uid,
                id: entry.id,
                ip: entry.ip.clone(),
                port: entry.port,
                backing_off,
                started: now,
            });
            budget.0 -= 1;
            if backing_off {
                budget.1 -= 1;
            }
        }
        reads
    }

    /// Records what `read` got at `now` and schedules the pod's next read; the job to
    /// reconcile now, if the status it shows changed and the job's gap allows.
    pub fn record(
        &mut self,
        read: &Read,
        progress: Option<Progress>,
        now: Duration,
        cfg: &PollerConfig,
    ) -> Option<JobRef> {
        let entry = self
            .pods
            .get_mut(&read.uid)
            .filter(|e| e.id == read.id && e.due.is_none())?;
        let was_failing = entry.failures > 0;
        entry.failures = match progress {
            Some(_) => 0,
            None => entry.failures.saturating_add(1),
        };
        let seen = change(entry.latest.as_ref(), progress.as_ref());
        entry.latest = progress;
        let failures = entry.failures;
        let job = entry.job.clone();
        match (was_failing, failures > 0) {
            (false, true) => self.in_backoff += 1,
            (true, false) => self.in_backoff -= 1,
            _ => {}
        }
        let delay = backoff(failures, cfg.interval, cfg.max_backoff);
        let at = next_due(
            read.started,
            delay,
            spread(&read.uid, cfg.interval),
            cfg.interval,
        );
        self.schedule(&read.uid, at);
        let gap = match seen {
            Change::None => return None,
            Change::Progress => cfg.progress_gap,
            Change::State => cfg.state_gap,
        };
        let (last, pending) = {
            let j = self.jobs.get(&job)?;
            (j.last_trigger, j.pending)
        };
        let at = trigger_at(last, pending.map(|s| s.0), now, gap);
        if let Some(slot) = pending.filter(|s| s.0 != at || at <= now) {
            self.triggers.remove(&slot);
            self.jobs.get_mut(&job)?.pending = None;
        }
        if at <= now {
            self.jobs.get_mut(&job)?.last_trigger = Some(now);
            return Some((*job).clone());
        }
        if self.jobs.get(&job)?.pending.is_none() {
            let slot = self.slot(at);
            self.triggers.insert(slot, job.clone());
            self.jobs.get_mut(&job)?.pending = Some(slot);
        }
        None
    }

    /// The jobs whose held-back triggers are due at `now`.
    pub fn due_triggers(&mut self, now: Duration) -> Vec<JobRef> {
        let mut due = Vec::new();
        while let Some(entry) = self.triggers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let job = entry.remove();
            if let Some(j) = self.jobs.get_mut(&job) {
                j.pending = None;
                j.last_trigger = Some(now);
                due.push((*job).clone());
            }
        }
        due
    }

    /// When something is due next: a held-back trigger, or a read of the queues that have room.
    pub fn next_wake(&self, answering: bool, backing_off: bool) -> Option<Duration> {
        let first = |q: &BTreeMap<Slot, Arc<str>>| q.first_key_value().map(|(s, _)| s.0);
        [
            self.triggers.first_key_value().map(|(s, _)| s.0),
            answering.then(|| first(&self.answering)).flatten(),
            (answering && backing_off)
                .then(|| first(&self.backing_off))
                .flatten(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// What the pod's launcher said at its last read; None if it did not answer then or has
    /// not been read yet.
    pub fn latest(&self, uid: &str) -> Option<&Progress> {
        self.pods.get(uid)?.latest.as_ref()
    }

    pub fn tracked_pods(&self) -> usize {
        self.pods.len()
    }

    /// Pods whose last read got no answer.
    pub fn pods_in_backoff(&self) -> usize {
        self.in_backoff
    }
}

struct Shared {
    cfg: PollerConfig,
    start: Instant,
    book: Mutex<Book>,
    /// Wakes the task: a pod tracked, a read done.
    wake: Notify,
    triggers: mpsc::UnboundedSender<JobRef>,
    metrics: Arc<Metrics>,
}

impl Shared {
    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    fn book(&self) -> MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn publish(&self, book: &Book) {
        let m = &self.metrics.poll;
        m.tracked_pods.set(book.tracked_pods() as i64);
        m.pods_in_backoff.set(book.pods_in_backoff() as i64);
    }

    fn trigger(&self, job: JobRef) {
        debug!(job = %job, "launcher progress changed; reconciling");
        self.metrics.poll.triggers.inc();
        // The controller gone means the operator is stopping.
        let _ = self.triggers.unbounded_send(job);
    }
}

/// The reconciles' handle on the background poller.
#[derive(Clone)]
pub struct Poller {
    shared: Arc<Shared>,
}

/// The background poller: runs until dropped.
pub struct PollerTask(tokio::task::JoinHandle<()>);

impl Drop for PollerTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Poller {
    /// Starts the poller; `exists` says whether a job is still there (a job deleted without a
    /// last reconcile is forgotten at its pods' next read). Returns the handle, the stream of
    /// jobs to reconcile (for `Controller::reconcile_on`), and the task (dropping it stops it).
    pub fn start(
        cfg: PollerConfig,
        metrics: Arc<Metrics>,
        exists: impl Fn(&JobRef) -> bool + Send + Sync + 'static,
    ) -> (Poller, mpsc::UnboundedReceiver<JobRef>, PollerTask) {
        // A launcher is read once per interval: its connection stays open in between, and
        // closes once the pod is no longer read (or only after backoffs, when it is dead).
        let client = LauncherClient::new(cfg.timeout, cfg.interval * 2);
        let (tx, rx) = mpsc::unbounded();
        let shared = Arc::new(Shared {
            cfg,
            start: Instant::now(),
            book: Mutex::default(),
            wake: Notify::new(),
            triggers: tx,
            metrics,
        });
        let task = tokio::spawn(run(shared.clone(), client, Box::new(exists)));
        (Poller { shared }, rx, PollerTask(task))
    }

    /// Reads `targets` for `job` from now on, in place of what was read for it; none: stops
    /// reading its pods and forgets them.
    pub fn track(&self, job: &JobRef, targets: Vec<Target>) {
        let now = self.shared.now();
        let mut book = self.shared.book();
        book.track(job, targets, now, &self.shared.cfg);
        self.shared.publish(&book);
        drop(book);
        self.shared.wake.notify_one();
    }

    pub fn untrack(&self, job: &JobRef) {
        self.track(job, Vec::new());
    }

    /// What the pod's launcher said at its last read (none if it did not answer then).
    pub fn latest(&self, uid: &str) -> Option<Progress> {
        self.shared.book().latest(uid).cloned()
    }

    /// Fills in `launcher` of every pod from its last read; pods not read get none.
    pub fn fill(&self, pods: &mut [ObservedPod]) {
        let book = self.shared.book();
        for pod in pods {
            pod.launcher = pod.uid.as_deref().and_then(|u| book.latest(u).cloned());
        }
    }
}

async fn run(
    shared: Arc<Shared>,
    client: LauncherClient,
    exists: Box<dyn Fn(&JobRef) -> bool + Send + Sync>,
) {
    let cfg = &shared.cfg;
    let all = Arc::new(Semaphore::new(cfg.concurrency.max(1)));
    let backing_off = Arc::new(Semaphore::new(cfg.backoff_concurrency.max(1)));
    loop {
        let notified = shared.wake.notified();
        let wake = {
            let now = shared.now();
            let mut book = shared.book();
            for job in book.due_triggers(now) {
                shared.trigger(job);
            }
            let reads = book.due(
                now,
                all.available_permits(),
                backing_off.available_permits(),
                &*exists,
            );
            for read in reads {
                let permits = (
                    all.clone().try_acquire_owned().ok(),
                    read.backing_off
                        .then(|| backing_off.clone().try_acquire_owned().ok())
                        .flatten(),
                );
                tokio::spawn(read_one(shared.clone(), client.clone(), read, permits));
            }
            shared.publish(&book);
            book.next_wake(
                all.available_permits() > 0,
                backing_off.available_permits() > 0,
            )
        };
        match wake {
            Some(at) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(shared.start + at) => {}
                    _ = notified => {}
                }
            }
            None => notified.await,
        }
    }
}

async fn read_one(
    shared: Arc<Shared>,
    client: LauncherClient,
    read: Read,
    permits: (Option<OwnedSemaphorePermit>, Option<OwnedSemaphorePermit>),
) {
    let started = Instant::now();
    let outcome = client.status(&read.ip, read.port).await;
    let m = &shared.metrics.poll;
    m.duration.observe(started.elapsed().as_secs_f64());
    m.results
        .get_or_create(&crate::metrics::OutcomeLabel {
            outcome: outcome.label(),
        })
        .inc();
    if !matches!(outcome, Outcome::Ok(_)) {
        debug!(pod_uid = %read.uid, ip = %read.ip, outcome = outcome.label(), "launcher did not answer");
    }
    let now = shared.now();
    let trigger = {
        let mut book = shared.book();
        let trigger = book.record(&read, outcome.into_progress(), now, &shared.cfg);
        shared.publish(&book);
        trigger
    };
    if let Some(job) = trigger {
        shared.trigger(job);
    }
    drop(permits);
    shared.wake.notify_one();
}

#[cfg(test)]
mod tests;
