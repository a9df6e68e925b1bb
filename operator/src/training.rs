//! What the workers say about their training, folded into the job's status: how far it is
//! (`status.progress`: step, total, percent, rate, ETA, metrics), whether it stalled (the
//! `Stalled` condition), and how much of the job's time was training (`status.goodput`).
//! Pure functions over the pods' launcher reports; the launchers read the workers' progress
//! files (`ELASTICJOB_PROGRESS_FILE`) and restart a stalled group themselves.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use elasticjob_contract::progress::{Stall, State};
use elasticjob_crds::status::{Goodput, TrainingProgress};

use crate::observed::ObservedPod;

fn time(unix: f64) -> Option<Time> {
    Timestamp::from_millisecond((unix * 1000.0) as i64)
        .ok()
        .map(Time)
}

/// The progress of the launcher with the highest step among `pods`; `old` when none reports
/// now (the launchers did not answer this time, or the workers are between rounds).
pub fn progress(old: Option<&TrainingProgress>, pods: &[ObservedPod]) -> Option<TrainingProgress> {
    let newest = pods
        .iter()
        .filter_map(|p| Some((p, p.launcher.as_ref()?.training.as_ref()?)))
        .max_by_key(|(_, t)| t.step);
    let Some((pod, t)) = newest else {
        return old.cloned();
    };
    let step = t.step as i64;
    let total = t.total.map(|n| n as i64);
    Some(TrainingProgress {
        step,
        total,
        percent: total
            .filter(|&n| n > 0)
            .map(|n| (step.min(n) * 100 / n) as i32),
        steps_per_second: t.steps_per_second,
        eta_seconds: eta(step, total, t.steps_per_second),
        metrics: t.metrics.clone(),
        pod: pod.name.clone(),
        updated: time(t.updated),
    })
}

/// Seconds to the last step at `rate` steps per second.
pub fn eta(step: i64, total: Option<i64>, rate: Option<f64>) -> Option<i64> {
    let (total, rate) = (total?, rate?);
    (rate > 0.0).then(|| ((total - step).max(0) as f64 / rate).round() as i64)
}

/// A stall that training has not moved past yet: a running pod's launcher restarted its
/// group for silence, and its workers have not reported since.
pub fn open_stall(pods: &[ObservedPod]) -> Option<(&ObservedPod, &Stall)> {
    pods.iter()
        .filter(|p| p.is_running())
        .filter_map(|p| {
            let l = p.launcher.as_ref()?;
            let stall = l.last_stall.as_ref()?;
            let moved_on = l.training.as_ref().is_some_and(|t| t.updated > stall.at);
            (!moved_on).then_some((p, stall))
        })
        .max_by(|a, b| a.1.at.total_cmp(&b.1.at))
}

/// The Stalled condition's message for `stall` on `pod`.
pub fn stall_message(pod: &ObservedPod, stall: &Stall) -> String {
    format!(
        "ranks {:?} on pod {}{} reported no progress for {:.0}s in round {} (failurePolicy.stallTimeoutSeconds); its launcher restarted the worker group",
        stall.silent_ranks,
        pod.name,
        pod.node
            .as_deref()
            .map(|n| format!(" (node {n})"))
            .unwrap_or_default(),
        stall.silent_seconds,
        stall.round
    )
}

/// Whether every running pod of the job trains now: at least `min` pods below `desired` run,
/// each of their launchers runs workers, and none is stalled.
pub fn all_training(pods: &[ObservedPod], desired: u32, min: usize) -> bool {
    let running: Vec<&ObservedPod> = pods
        .iter()
        .filter(|p| p.index < desired && p.is_running())
        .collect();
    running.len() >= min.max(1)
        && running.iter().all(|p| {
            p.launcher
                .as_ref()
                .is_some_and(|l| l.state == State::Running)
        })
        && open_stall(pods).is_none()
}

/// How long a sample may stand when nothing changes. Samples at the moments training starts
/// or stops make goodput exact; this one only keeps the status's figures fresh. Every sample
/// writes the status, so it is also the status writes a quiet running job costs: one a minute
/// (a running job is reconciled at least this often, and whenever a launcher's report changes).
pub const GOODPUT_SAMPLE_EVERY: f64 = 60.0;

/// Whether to take a goodput sample now: the first, when training starts or stops, when the job
/// is suspended or resumed, or once the last sample is old.
pub fn goodput_due(
    old: Option<&Goodput>,
    training_now: bool,
    active: bool,
    now: Timestamp,
) -> bool {
    match old {
        None => true,
        Some(g) => {
            g.training != (training_now && active)
                || now.duration_since(g.sampled_at.0).as_secs_f64() >= GOODPUT_SAMPLE_EVERY
        }
    }
}

/// Goodput after one more sample at `now`: the time since the last sample counts as training
/// if the job trained then; `active` says whether it counts at all (not while suspended).
pub fn sample_goodput(
    old: Option<&Goodput>,
    training_now: bool,
    active: bool,
    now: Timestamp,
) -> Goodput {
    let (mut training_seconds, mut elapsed_seconds) = (0.0, 0.0);
    if let Some(g) = old {
        let dt = now.duration_since(g.sampled_at.0).as_secs_f64().max(0.0);
        training_seconds = g.training_seconds + if g.training && active { dt } else { 0.0 };
        elapsed_seconds = g.elapsed_seconds + if active { dt } else { 0.0 };
    }
    Goodput {
        training_seconds,
        elapsed_seconds,
        percent: if elapsed_seconds > 0.0 {
            (training_seconds * 100.0 / elapsed_seconds).round() as i32
        } else {
            0
        },
        training: training_now && active,
        sampled_at: Time(now),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{at, running};
    use crate::observed::Phase;
    use elasticjob_contract::progress::{Progress, Training};

    fn reporting(index: u32, step: u64, updated: f64, stall: Option<f64>) -> ObservedPod {
        let mut p = running(index);
        p.launcher = Some(Progress {
            state: State::Running,
            training: Some(Training {
                step,
                total: Some(1000),
                metrics: [("loss".to_string(), 0.5)].into(),
                updated,
                steps_per_second: Some(2.0),
            }),
            last_stall: stall.map(|at| Stall {
                round: 3,
                silent_ranks: vec![5],
                silent_seconds: 60.0,
                at,
            }),
            ..Progress::new(1, 3)
        });
        p
    }

    #[test]
    fn progress_is_the_furthest_launchers_with_percent_and_eta() {
        let pods = [reporting(0, 100, 10.0, None), reporting(1, 120, 11.0, None)];
        let p = progress(None, &pods).unwrap();
        assert_eq!(
            (p.step, p.total, p.percent, p.eta_seconds, p.pod.as_str()),
            (120, Some(1000), Some(12), Some(440), "train-worker-1")
        );
        assert_eq!(p.metrics["loss"], 0.5);
        // Nobody answers now: the last progress stays.
        assert_eq!(progress(Some(&p), &[running(0)]), Some(p));
        assert_eq!(eta(10, Some(5), Some(1.0)), Some(0));
        assert_eq!(eta(10, None, Some(1.0)), None);
        assert_eq!(eta(10, Some(20), Some(0.0)), None);
    }

    #[test]
    fn a_stall_stays_open_until_training_reports_again() {
        let stalled = reporting(1, 120, 50.0, Some(60.0));
        let pods = [reporting(0, 120, 55.0, None), stalled.clone()];
        let (pod, stall) = open_stall(&pods).unwrap();
        assert_eq!(pod.name, "train-worker-1");
        assert!(stall_message(pod, stall).contains(
            "ranks [5] on pod train-worker-1 (node node-1) reported no progress for 60s in round 3"
        ));
        assert!(!all_training(&pods, 2, 1));
        let moved_on = [
            reporting(0, 130, 70.0, None),
            reporting(1, 130, 70.0, Some(60.0)),
        ];
        assert!(open_stall(&moved_on).is_none());
        assert!(all_training(&moved_on, 2, 2));
        assert!(!all_training(&moved_on, 2, 3), "fewer than min pods run");
        let mut starting = moved_on.clone();
        starting[1].launcher.as_mut().unwrap().state = State::Rendezvous;
        assert!(
            !all_training(&starting, 2, 1),
            "a pod re-forming does not train"
        );
        let mut pending = moved_on;
        pending[1].phase = Phase::Pending;
        assert!(
            all_training(&pending, 2, 1),
            "pods not running yet are not asked"
        );
    }

    #[test]
    fn goodput_counts_the_time_after_a_training_sample() {
        let g = sample_goodput(None, false, true, at(0));
        assert_eq!((g.elapsed_seconds, g.percent), (0.0, 0));
        let g = sample_goodput(Some(&g), true, true, at(10)); // 0..10 starting
        let g = sample_goodput(Some(&g), true, true, at(40)); // 10..40 training
        let g = sample_goodput(Some(&g), false, true, at(50)); // 40..50 training
        assert_eq!(
            (g.training_seconds, g.elapsed_seconds, g.percent),
            (40.0, 50.0, 80)
        );
        let g = sample_goodput(Some(&g), true, false, at(100)); // suspended: not counted
        assert_eq!((g.training_seconds, g.elapsed_seconds), (40.0, 50.0));
        assert!(!g.training);
        assert!(
            !goodput_due(Some(&g), false, false, at(110)),
            "nothing changed"
        );
        assert!(
            goodput_due(Some(&g), true, true, at(110)),
            "resumed, training"
        );
        assert!(
            !goodput_due(Some(&g), false, false, at(130)),
            "a sample 30 s old stands"
        );
        assert!(
            goodput_due(Some(&g), false, false, at(160)),
            "an old sample"
        );
    }
}
