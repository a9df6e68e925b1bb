//! What the pods' launchers report about themselves, folded into the job's status: each
//! launcher's state, round, world size and worker-group restarts (`status.launchers`), and the
//! job's running total of worker-group restarts (`status.workerRestarts`).
//!
//! A launcher reports through its read-only status endpoint while it runs (polled by
//! [`crate::poll`]) and through its termination message when it ends. A pod that has not
//! started, or whose launcher does not answer, gets an entry with state `Pending` or `Unknown`,
//! so every pod the operator has seen is on the list: one that later vanishes unseen
//! (force-deleted, deleted and gone between two reconciles, or deleted while the operator was
//! down) is still found and counted as a failure (`crate::next_status`). Its restart count starts
//! at 0 in every new pod, so the total is kept as a sum of increments: `status.launchers`
//! remembers, by pod UID, what was already counted. The status is written in one piece, so an
//! operator that restarts between two polls neither loses nor double-counts a restart.

use elasticjob_contract::progress::{Progress, State};
use elasticjob_contract::report::{Reason, RunReport};
use elasticjob_crds::status::LauncherStatus;

use crate::observed::{ObservedPod, Phase};

/// The launcher's last word: its termination message, once the trainer container ended.
fn final_report(pod: &ObservedPod) -> Option<Progress> {
    let report = RunReport::parse(pod.termination.trainer.as_ref()?.message.as_deref()?)?;
    Some(Progress {
        state: if report.reason == Reason::Succeeded {
            State::Succeeded
        } else {
            State::Failed
        },
        round: report.round,
        restart_count: report.restart_count,
        ..Progress::new(0, report.max_restarts)
    })
}

/// The state of a running pod whose launcher has not answered.
pub const UNKNOWN: &str = "Unknown";
/// The state of a pod that has not started yet.
pub const PENDING: &str = "Pending";

/// Entries of `old` whose pods are no longer among `pods` and had not finished: pods that
/// went without the operator seeing them end.
pub fn vanished<'a>(old: &'a [LauncherStatus], pods: &[ObservedPod]) -> Vec<&'a LauncherStatus> {
    old.iter()
        .filter(|l| l.state != "Succeeded")
        .filter(|l| {
            !pods
                .iter()
                .any(|p| p.uid.as_deref() == Some(l.pod_uid.as_str()))
        })
        .collect()
}

/// `status.launchers` and the restarts found since the last status.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Folded {
    pub launchers: Vec<LauncherStatus>,
    /// Restarts not counted before, by pod: (pod, its restart count now, how many are new).
    pub new_restarts: Vec<(String, i32, i32)>,
}

impl Folded {
    /// Saturating: launchers' counts are what their bodies say, up to `i32::MAX` each.
    pub fn total_new(&self) -> i32 {
        self.new_restarts
            .iter()
            .fold(0, |sum, (_, _, n)| sum.saturating_add(*n))
    }
}

/// A launcher's count as the status's `i32`, saturating: a count past `i32::MAX` (only a broken
/// or hostile launcher sends one) must not wrap to a negative one.
fn count(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// Folds what the pods report now into what the status recorded (`old`). A pod that did not
/// answer keeps its last entry; a pod that is gone drops out (its restarts stay counted).
pub fn fold(old: &[LauncherStatus], pods: &[ObservedPod]) -> Folded {
    let mut pods: Vec<&ObservedPod> = pods.iter().collect();
    pods.sort_by_key(|p| p.index);
    let mut folded = Folded::default();
    for pod in pods {
        let Some(uid) = pod.uid.as_deref() else {
            continue;
        };
        let before = old.iter().find(|l| l.pod_uid == uid);
        let report = pod.launcher.clone().or_else(|| final_report(pod));
        let entry = match (report, before) {
            (Some(r), before) => {
                let counted = before.map_or(0, |b| b.restarts);
                // A count never goes down: a late poll can read an older value than the final
                // report did.
                let restarts = count(r.restart_count).max(counted);
                if restarts > counted {
                    folded
                        .new_restarts
                        .push((pod.name.clone(), restarts, restarts - counted));
                }
                LauncherStatus {
                    pod: pod.name.clone(),
                    pod_uid: uid.into(),
                    state: r.state.as_str().into(),
                    round: r
                        .round
                        .map(|r| i64::try_from(r).unwrap_or(i64::MAX))
                        .or(before.and_then(|b| b.round)),
                    world_size: r
                        .world_size
                        .map(count)
                        .or(before.and_then(|b| b.world_size)),
                    restarts,
                    stalls: count(r.stalls).max(before.map_or(0, |b| b.stalls)),
                }
            }
            (None, Some(before)) => before.clone(),
            (None, None) if pod.is_active() => LauncherStatus {
                pod: pod.name.clone(),
                pod_uid: uid.into(),
                state: if pod.phase == Phase::Pending {
                    PENDING.into()
                } else {
                    UNKNOWN.into()
                },
                round: None,
                world_size: None,
                restarts: 0,
                stalls: 0,
            },
            (None, None) => continue,
        };
        folded.launchers.push(entry);
    }
    folded
}

/// The newest round among the launchers, and the world size its launchers report.
pub fn newest_round(launchers: &[LauncherStatus]) -> (Option<i64>, Option<i32>) {
    let newest = launchers.iter().filter_map(|l| l.round).max();
    let world = launchers
        .iter()
        .filter(|l| l.round == newest)
        .find_map(|l| l.world_size);
    (newest, world)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observed::ContainerEnd;

    fn pod(index: u32, uid: &str, launcher: Option<(State, u64, u32, u32)>) -> ObservedPod {
        let mut p = crate::fixtures::pod(index, Phase::Running);
        p.uid = Some(uid.into());
        p.launcher = launcher.map(|(state, round, world, restarts)| Progress {
            state,
            round: Some(round),
            world_size: Some(world),
            restart_count: restarts,
            ..Progress::new(2, 3)
        });
        p
    }

    fn entry(index: u32, uid: &str, restarts: i32) -> LauncherStatus {
        LauncherStatus {
            pod: format!("train-worker-{index}"),
            pod_uid: uid.into(),
            state: "Running".into(),
            round: Some(1),
            world_size: Some(4),
            restarts,
            stalls: 0,
        }
    }

    #[test]
    fn counts_each_restart_once_across_polls() {
        let first = fold(
            &[],
            &[
                pod(0, "a", Some((State::Running, 1, 4, 0))),
                pod(1, "b", Some((State::Running, 1, 4, 1))),
            ],
        );
        assert_eq!(first.total_new(), 1);
        assert_eq!(first.new_restarts, [("train-worker-1".to_string(), 1, 1)]);
        assert_eq!(first.launchers.len(), 2);
        let again = fold(
            &first.launchers,
            &[
                pod(0, "a", Some((State::Running, 2, 4, 0))),
                pod(1, "b", Some((State::Running, 2, 4, 1))),
            ],
        );
        assert_eq!(again.total_new(), 0, "already counted");
        assert_eq!(newest_round(&again.launchers), (Some(2), Some(4)));
        let more = fold(
            &again.launchers,
            &[
                pod(0, "a", None),
                pod(1, "b", Some((State::Running, 3, 4, 3))),
            ],
        );
        assert_eq!(more.total_new(), 2);
        assert_eq!(
            more.launchers[0], again.launchers[0],
            "no answer: the last entry stays"
        );
    }

    #[test]
    fn a_recreated_pod_starts_from_zero_and_a_gone_pod_drops_out() {
        let old = [entry(0, "a", 2), entry(1, "b", 1)];
        let f = fold(&old, &[pod(1, "b2", Some((State::Rendezvous, 2, 4, 1)))]);
        assert_eq!(f.total_new(), 1, "a new pod's restart is new");
        assert_eq!(f.launchers.len(), 1);
        assert_eq!(f.launchers[0].pod_uid, "b2");
    }

    #[test]
    fn the_final_report_counts_restarts_the_polls_missed_and_counts_never_drop() {
        let mut done = pod(1, "b", None);
        done.phase = Phase::Succeeded;
        done.termination.trainer = Some(ContainerEnd {
            name: "trainer".into(),
            exit_code: 0,
            message: Some(
                r#"{"kind":"elastic-launch/v1","reason":"Succeeded","host":"h","restartCount":2,"maxRestarts":3,"round":4,"message":"the workers succeeded","timestamp":1}"#.into(),
            ),
            ..Default::default()
        });
        let f = fold(&[entry(1, "b", 1)], &[done]);
        assert_eq!(f.total_new(), 1);
        assert_eq!(f.launchers[0].state, "Succeeded");
        assert_eq!(f.launchers[0].round, Some(4));
        assert_eq!(
            f.launchers[0].world_size,
            Some(4),
            "kept from the last poll"
        );
        let stale = fold(
            &[entry(1, "b", 3)],
            &[pod(1, "b", Some((State::Running, 1, 4, 2)))],
        );
        assert_eq!((stale.total_new(), stale.launchers[0].restarts), (0, 3));
    }

    #[test]
    fn pods_without_a_report_are_listed_as_pending_or_unknown() {
        let mut pending = pod(1, "b", None);
        pending.phase = Phase::Pending;
        let mut going = pod(2, "c", None);
        going.deletion = Some(crate::fixtures::at(1));
        let f = fold(&[], &[pod(0, "a", None), pending, going]);
        let states: Vec<(&str, i32)> = f
            .launchers
            .iter()
            .map(|l| (l.state.as_str(), l.restarts))
            .collect();
        assert_eq!(
            states,
            [("Unknown", 0), ("Pending", 0)],
            "a pod being deleted is not added"
        );
    }

    #[test]
    fn vanished_entries_are_those_whose_pods_are_gone_unfinished() {
        let mut done = entry(2, "c", 0);
        done.state = "Succeeded".into();
        let old = [entry(0, "a", 0), entry(1, "b", 0), done];
        let gone: Vec<&str> = vanished(&old, &[pod(0, "a", None)])
            .iter()
            .map(|l| l.pod_uid.as_str())
            .collect();
        assert_eq!(gone, ["b"]);
    }

    /// Found with fuzz/ (operator_status): counts past `i32::MAX` in a /status body wrapped to
    /// negative ones in the status, and two pods' new restarts overflowed their sum.
    #[test]
    fn counts_past_i32_saturate_instead_of_wrapping_or_overflowing() {
        let mut huge = pod(0, "a", Some((State::Running, u64::MAX, u32::MAX, u32::MAX)));
        huge.launcher.as_mut().unwrap().stalls = u32::MAX;
        let folded = fold(
            &[],
            &[
                huge,
                pod(1, "b", Some((State::Running, 1, 4, i32::MAX as u32))),
            ],
        );
        let a = &folded.launchers[0];
        assert_eq!(
            (a.round, a.world_size, a.restarts, a.stalls),
            (Some(i64::MAX), Some(i32::MAX), i32::MAX, i32::MAX)
        );
        assert_eq!(folded.total_new(), i32::MAX, "the sum saturates");
    }
}
