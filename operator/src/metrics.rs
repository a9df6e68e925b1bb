//! The operator's Prometheus metrics (served on `/metrics` by [`crate::http`]).
//!
//! - `elasticjob_jobs{state}`: jobs by state, counted from the controller's cache at scrape time
//!   (so a deleted job disappears from the count at once);
//! - `elasticjob_restarts_total{budget}`: restarts charged to the application and infrastructure
//!   budgets;
//! - `elasticjob_pod_creations_total`, `elasticjob_pod_deletions_total{reason}` (reason
//!   `recreate` counts pod recreations after failures);
//! - `elasticjob_reconcile_duration_seconds{outcome}` (`ok`; `stale`: nothing done because the
//!   cache did not show the operator's own last writes yet; `error`),
//!   `elasticjob_reconcile_errors_total`;
//! - `elasticjob_operator_reconciles_in_flight`: reconciles running now (at `--concurrency`,
//!   the controller's queue is backing up);
//! - `elasticjob_operator_reconcile_triggers_total{source}`: watch events that asked for a
//!   reconcile (`job`, `pod`, `service`, `workload`). kube-rs' controller does not expose its
//!   queue; it merges the triggers of a job that is already queued, so these are an upper bound
//!   on what enters the queue, and triggers minus reconciles (by duration count) is how many
//!   merged;
//! - `elasticjob_operator_api_requests_total{verb,resource,code}`: requests to the apiserver
//!   by verb (`WATCH` for watches, `LIST` for reads of a collection, else the HTTP method),
//!   resource (`pods`, `elasticjobs/status`, `leases`, ...) and status class (`2xx`,
//!   `4xx`, ..., `error` when no response came); `elasticjob_operator_api_rate_limit_wait_seconds`:
//!   how long requests waited for the client-side rate limit (`--kube-qps`, `--kube-burst`);
//! - `elasticjob_operator_leader`: 1 while this replica leads;
//! - `elasticjob_job_goodput_ratio{namespace,job}` and `elasticjob_job_training_seconds{...}`:
//!   each job's goodput (`status.goodput`), from the cache at scrape time;
//! - the launcher poller ([`PollMetrics`]): `elasticjob_launcher_poll_duration_seconds`,
//!   `elasticjob_launcher_polls_total{outcome}` (ok, timeout, refused, bad_body),
//!   `elasticjob_launcher_poll_tracked_pods`, `elasticjob_launcher_poll_backoff_pods`,
//!   `elasticjob_launcher_poll_triggers_total` (reconciles asked for by a change).

use std::sync::atomic::{AtomicI64, AtomicU64};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use elasticjob_crds::status::{Goodput, JobState};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BudgetLabel {
    pub budget: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabel {
    pub namespace: String,
    pub job: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    pub source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabel {
    pub verb: String,
    pub resource: String,
    pub code: &'static str,
}

/// How a reconcile ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// It did nothing: what the caches held was older than the operator's own last writes.
    Stale,
    Error,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Stale => "stale",
            Outcome::Error => "error",
        }
    }
}

/// Counts a reconcile as in flight while it lives.
pub struct InFlight(Gauge<i64, AtomicI64>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

fn reconcile_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 1.5, 24))
}

pub struct Metrics {
    pub registry: Registry,
    pub jobs: Family<StateLabel, Gauge<i64, AtomicI64>>,
    pub restarts: Family<BudgetLabel, Counter>,
    pub pod_creations: Counter,
    pub pod_deletions: Family<ReasonLabel, Counter>,
    pub reconcile_duration: Family<OutcomeLabel, Histogram, fn() -> Histogram>,
    pub reconcile_errors: Counter,
    pub reconciles_in_flight: Gauge<i64, AtomicI64>,
    pub triggers: Family<SourceLabel, Counter>,
    pub api_requests: Family<RequestLabel, Counter>,
    pub rate_limit_wait: Histogram,
    pub leader: Gauge<i64, AtomicI64>,
    pub goodput: Family<JobLabel, Gauge<f64, AtomicU64>>,
    pub training_seconds: Family<JobLabel, Gauge<f64, AtomicU64>>,
    pub poll: PollMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("elasticjob");
        let jobs = Family::<StateLabel, Gauge<i64, AtomicI64>>::default();
        registry.register("jobs", "ElasticJobs by state", jobs.clone());
        let restarts = Family::<BudgetLabel, Counter>::default();
        registry.register(
            "restarts",
            "Restarts by budget: worker (worker-group restarts inside pods), application and infrastructure (pods recreated)",
            restarts.clone(),
        );
        let pod_creations = Counter::default();
        registry.register(
            "pod_creations",
            "Worker pods created",
            pod_creations.clone(),
        );
        let pod_deletions = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "pod_deletions",
            "Worker pods deleted, by reason (recreate = replaced after a failure)",
            pod_deletions.clone(),
        );
        let reconcile_duration =
            Family::<OutcomeLabel, Histogram, fn() -> Histogram>::new_with_constructor(
                reconcile_buckets,
            );
        registry.register(
            "reconcile_duration_seconds",
            "Time of one reconcile, by outcome (ok, stale: the cache did not show the operator's last writes yet, error)",
            reconcile_duration.clone(),
        );
        let reconciles_in_flight = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "operator_reconciles_in_flight",
            "Reconciles running now (at --concurrency, jobs wait in the controller's queue)",
            reconciles_in_flight.clone(),
        );
        let triggers = Family::<SourceLabel, Counter>::default();
        registry.register(
            "operator_reconcile_triggers",
            "Watch events that asked for a reconcile, by source (triggers of a job already queued merge)",
            triggers.clone(),
        );
        let api_requests = Family::<RequestLabel, Counter>::default();
        registry.register(
            "operator_api_requests",
            "Requests to the Kubernetes apiserver by verb (WATCH for watches, LIST for reads of a collection), resource and status class (error: no response)",
            api_requests.clone(),
        );
        let rate_limit_wait = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register(
            "operator_api_rate_limit_wait_seconds",
            "Time requests waited for the client-side rate limit (--kube-qps, --kube-burst)",
            rate_limit_wait.clone(),
        );
        let reconcile_errors = Counter::default();
        registry.register(
            "reconcile_errors",
            "Reconciles that failed (retried with backoff)",
            reconcile_errors.clone(),
        );
        let leader = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "operator_leader",
            "1 while this replica holds the leader lease",
            leader.clone(),
        );
        let goodput = Family::<JobLabel, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "job_goodput_ratio",
            "Share of the job's active time in which all its pods trained (status.goodput)",
            goodput.clone(),
        );
        let training_seconds = Family::<JobLabel, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "job_training_seconds",
            "Seconds in which all the job's pods trained (status.goodput.trainingSeconds)",
            training_seconds.clone(),
        );
        let poll = PollMetrics::register(&mut registry);
        Metrics {
            poll,
            registry,
            goodput,
            training_seconds,
            jobs,
            restarts,
            pod_creations,
            pod_deletions,
            reconcile_duration,
            reconcile_errors,
            reconciles_in_flight,
            triggers,
            api_requests,
            rate_limit_wait,
            leader,
        }
    }
}

// The launcher poller's metrics (crate::poller).

pub struct PollMetrics {
    pub duration: Histogram,
    pub results: Family<OutcomeLabel, Counter>,
    pub tracked_pods: Gauge<i64, AtomicI64>,
    pub pods_in_backoff: Gauge<i64, AtomicI64>,
    pub triggers: Counter,
}

impl PollMetrics {
    fn register(registry: &mut Registry) -> Self {
        // 0.5 ms to 4 s: a kept-alive read in the cluster takes about a millisecond; the
        // timeout is 2 s.
        let duration = Histogram::new(exponential_buckets(0.0005, 2.0, 14));
        registry.register(
            "launcher_poll_duration_seconds",
            "Time of one read of a launcher's /status, answered or not",
            duration.clone(),
        );
        let results = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "launcher_polls",
            "Reads of launchers' /status by outcome: ok, timeout, refused (no connection), bad_body (not a launcher's status)",
            results.clone(),
        );
        let tracked_pods = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "launcher_poll_tracked_pods",
            "Running pods whose launchers are read",
            tracked_pods.clone(),
        );
        let pods_in_backoff = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "launcher_poll_backoff_pods",
            "Tracked pods whose launcher did not answer its last read (read again after a backoff)",
            pods_in_backoff.clone(),
        );
        let triggers = Counter::default();
        registry.register(
            "launcher_poll_triggers",
            "Reconciles asked for because a launcher's progress changed",
            triggers.clone(),
        );
        PollMetrics {
            duration,
            results,
            tracked_pods,
            pods_in_backoff,
            triggers,
        }
    }
}

impl Metrics {
    /// Counts a reconcile in flight until the guard is dropped.
    pub fn reconcile_started(&self) -> InFlight {
        self.reconciles_in_flight.inc();
        InFlight(self.reconciles_in_flight.clone())
    }

    pub fn observe_reconcile(&self, outcome: Outcome, seconds: f64) {
        self.reconcile_duration
            .get_or_create(&OutcomeLabel {
                outcome: outcome.as_str(),
            })
            .observe(seconds);
    }

    /// A watch event of `source` asked for a reconcile.
    pub fn trigger(&self, source: &'static str) {
        self.triggers.get_or_create(&SourceLabel { source }).inc();
    }

    /// Sets the jobs-by-state gauge from the states of every job the operator sees.
    pub fn set_job_states(&self, states: impl IntoIterator<Item = JobState>) {
        let mut counts = std::collections::BTreeMap::new();
        for s in JobState::ALL {
            counts.insert(s.as_str(), 0i64);
        }
        for s in states {
            *counts.entry(s.as_str()).or_default() += 1;
        }
        for (state, n) in counts {
            self.jobs
                .get_or_create(&StateLabel {
                    state: state.to_string(),
                })
                .set(n);
        }
    }

    /// Sets the per-job goodput gauges from every job the operator sees; jobs that are gone
    /// drop out.
    pub fn set_goodput<'a>(&self, jobs: impl IntoIterator<Item = (JobLabel, &'a Goodput)>) {
        self.goodput.clear();
        self.training_seconds.clear();
        for (label, g) in jobs {
            let ratio = if g.elapsed_seconds > 0.0 {
                g.training_seconds / g.elapsed_seconds
            } else {
                0.0
            };
            self.goodput.get_or_create(&label).set(ratio);
            self.training_seconds
                .get_or_create(&label)
                .set(g.training_seconds);
        }
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_every_family() {
        let m = Metrics::default();
        m.set_job_states([JobState::Running, JobState::Running, JobState::Failed]);
        m.restarts
            .get_or_create(&BudgetLabel {
                budget: "application".into(),
            })
            .inc();
        m.observe_reconcile(Outcome::Stale, 0.01);
        let in_flight = m.reconcile_started();
        m.trigger("pod");
        m.api_requests
            .get_or_create(&RequestLabel {
                verb: "PATCH".into(),
                resource: "pods".into(),
                code: "2xx",
            })
            .inc();
        let g = Goodput {
            training_seconds: 30.0,
            elapsed_seconds: 40.0,
            percent: 75,
            training: true,
            sampled_at: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ),
        };
        let label = JobLabel {
            namespace: "ml".into(),
            job: "train".into(),
        };
        m.set_goodput([(label, &g)]);
        m.poll
            .results
            .get_or_create(&OutcomeLabel { outcome: "timeout" })
            .inc();
        m.poll.duration.observe(2.0);
        let text = m.encode();
        for want in [
            "elasticjob_jobs{state=\"Running\"} 2",
            "elasticjob_jobs{state=\"Failed\"} 1",
            "elasticjob_jobs{state=\"Succeeded\"} 0",
            "elasticjob_restarts_total{budget=\"application\"} 1",
            "elasticjob_reconcile_duration_seconds_count{outcome=\"stale\"} 1",
            "elasticjob_operator_reconciles_in_flight 1",
            "elasticjob_operator_reconcile_triggers_total{source=\"pod\"} 1",
            "elasticjob_operator_api_requests_total{verb=\"PATCH\",resource=\"pods\",code=\"2xx\"} 1",
            "elasticjob_operator_api_rate_limit_wait_seconds_count 0",
            "elasticjob_operator_leader 0",
            "elasticjob_job_goodput_ratio{namespace=\"ml\",job=\"train\"} 0.75",
            "elasticjob_job_training_seconds{namespace=\"ml\",job=\"train\"} 30.0",
            "elasticjob_launcher_polls_total{outcome=\"timeout\"} 1",
            "elasticjob_launcher_poll_duration_seconds_count 1",
            "elasticjob_launcher_poll_tracked_pods 0",
            "elasticjob_launcher_poll_backoff_pods 0",
            "elasticjob_launcher_poll_triggers_total 0",
        ] {
            assert!(text.contains(want), "{want} missing in:\n{text}");
        }
        drop(in_flight);
        assert!(
            m.encode()
                .contains("elasticjob_operator_reconciles_in_flight 0")
        );
    }
}
