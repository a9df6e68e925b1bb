//! The operator's reading of a failed pod (operator/src/failure.rs, progress.rs): the trainer
//! container's termination message (the launcher's JSON report, launcher/src/report.rs, or a
//! log tail), its exit code and reason, and the pod's reason, classified and folded into the
//! status, never panic; and the launcher's writer side, `RunReport::to_bounded_json`, keeps any
//! report it can read within the termination-message limit and readable again.
//!
//! Input: bytes 0..4 the exit code (i32 LE), byte 4 picks the container's reason, byte 5 the
//! pod's reason, byte 6 flags (bit 0: the init container failed instead; bit 1: a disruption;
//! bit 2: the node is ready; bit 3: a policy with retryable exit codes), the rest (lossy UTF-8)
//! is the termination message.

#![no_main]

use elasticjob_contract::report::{RunReport, TERMINATION_MESSAGE_LIMIT};
use elasticjob_crds::spec::FailurePolicy;
use elasticjob_operator::ObservedPod;
use elasticjob_operator::failure;
use elasticjob_operator::observed::{ContainerEnd, Phase, Termination};
use elasticjob_operator::progress;
use libfuzzer_sys::fuzz_target;

const CONTAINER_REASONS: [Option<&str>; 6] = [
    None,
    Some("Error"),
    Some("OOMKilled"),
    Some("ContainerCannotRun"),
    Some("StartError"),
    Some("Completed"),
];
const POD_REASONS: [Option<&str>; 8] = [
    None,
    Some("Evicted"),
    Some("NodeLost"),
    Some("DeadlineExceeded"),
    Some("OutOfnvidia.com/gpu"),
    Some("Shutdown"),
    Some("Preempting"),
    Some("SomethingNew"),
];
const DISRUPTIONS: [&str; 4] = [
    "PreemptionByScheduler",
    "DeletionByTaintManager",
    "DeletionByPodGC",
    "SomethingNew",
];

fuzz_target!(|data: &[u8]| {
    if data.len() < 7 {
        return;
    }
    let exit_code = i32::from_le_bytes(data[0..4].try_into().unwrap());
    let reason = CONTAINER_REASONS[usize::from(data[4]) % CONTAINER_REASONS.len()];
    let pod_reason = POD_REASONS[usize::from(data[5]) % POD_REASONS.len()];
    let flags = data[6];
    let message = String::from_utf8_lossy(&data[7..]).into_owned();

    let end = ContainerEnd {
        name: if flags & 1 != 0 {
            "elastic-launch-install"
        } else {
            "trainer"
        }
        .into(),
        exit_code,
        reason: reason.map(String::from),
        message: Some(message.clone()),
        ..ContainerEnd::default()
    };
    let termination = Termination {
        pod_reason: pod_reason.map(String::from),
        pod_message: pod_reason.map(|_| message.clone()),
        trainer: (flags & 1 == 0).then(|| end.clone()),
        init: (flags & 1 != 0).then(|| end.clone()),
    };
    let mut policy = FailurePolicy::default();
    if flags & 8 != 0 {
        policy.retryable_exit_codes = vec![1, exit_code.clamp(1, 255)];
    }

    let c = failure::classify(&termination, &policy);
    assert!(!c.reason.is_empty());

    let mut pod = ObservedPod::gone("job-worker-0", "uid-0", 0);
    pod.phase = Phase::Failed;
    pod.termination = termination;
    pod.node_ready = Some(flags & 4 != 0);
    pod.disruption =
        (flags & 2 != 0).then(|| DISRUPTIONS[usize::from(data[5]) % DISRUPTIONS.len()].to_string());
    let _ = failure::classify_pod(&pod, &policy);
    let _ = failure::classify_disruption(&pod);
    let folded = progress::fold(&[], std::slice::from_ref(&pod));
    let _ = folded.total_new();
    let _ = progress::newest_round(&folded.launchers);

    // The writer side: a report the operator can read survives the launcher's bounding.
    if let Some(report) = RunReport::parse(&message) {
        let json = report.to_bounded_json();
        let again = RunReport::parse(&json).expect("a bounded report parses");
        assert!(
            json.len() <= TERMINATION_MESSAGE_LIMIT || again.message.is_empty(),
            "{} bytes with a message left",
            json.len()
        );
        let kept = again.message.strip_prefix('…').unwrap_or(&again.message);
        assert!(report.message.ends_with(kept), "the message's end is kept");
        assert_eq!(
            RunReport {
                message: String::new(),
                ..again
            },
            RunReport {
                message: String::new(),
                ..report
            },
            "bounding changes only the message"
        );
    }
});
