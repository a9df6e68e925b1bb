//! The operator's reading of launchers' `GET /status` bodies (operator/src/poll.rs reads them,
//! `Progress::parse`; operator/src/progress.rs folds them into `status.launchers` and the job's
//! worker-restart total): any body gives a progress or none, never a panic, and the folded
//! status keeps its invariants: a restart count never goes down, new restarts are positive
//! and add up.
//!
//! Input: the body, as the operator gets it (lossy UTF-8). Two running pods answer with it;
//! the first already has an entry in the status.

#![no_main]

use elasticjob_contract::progress::Progress;
use elasticjob_crds::status::LauncherStatus;
use elasticjob_operator::ObservedPod;
use elasticjob_operator::observed::Phase;
use elasticjob_operator::progress;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let body = String::from_utf8_lossy(data);
    let parsed = Progress::parse(&body);

    let pods: Vec<ObservedPod> = (0..2)
        .map(|i| {
            let mut pod = ObservedPod::gone(&format!("job-worker-{i}"), &format!("uid-{i}"), i);
            pod.phase = Phase::Running;
            pod.launcher = parsed.clone();
            pod
        })
        .collect();
    let old = [LauncherStatus {
        pod: "job-worker-0".into(),
        pod_uid: "uid-0".into(),
        state: "Running".into(),
        round: Some(7),
        world_size: Some(8),
        restarts: 3,
        stalls: 1,
    }];

    let folded = progress::fold(&old, &pods);
    assert_eq!(folded.launchers.len(), 2, "every running pod has an entry");
    for entry in &folded.launchers {
        let counted = old
            .iter()
            .find(|o| o.pod_uid == entry.pod_uid)
            .map_or(0, |o| o.restarts);
        assert!(entry.restarts >= counted, "restarts went down: {entry:?}");
        assert!(
            entry.stalls >= 0 && entry.world_size.is_none_or(|w| w >= 0),
            "{entry:?}"
        );
    }
    for (pod, now, new) in &folded.new_restarts {
        assert!(*new > 0 && new <= now, "{pod}: {new} new of {now}");
    }
    let total = folded.total_new();
    assert!(total >= 0, "negative new restarts: {total}");
    let _ = progress::newest_round(&folded.launchers);
    let _ = progress::vanished(&old, &pods);
});
