//! Test data: a job like examples/elasticjob.yaml and pods in any state.

use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};
use k8s_openapi::jiff::Timestamp;
use serde_json::json;

use elasticjob_crds::spec::{ElasticJob, ElasticJobSpec, NprocPerNode};

use crate::observed::{ContainerEnd, ObservedPod, Phase, Termination};

pub const UID: &str = "6c1f2b9e-0000-4000-8000-000000000001";

pub fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

/// 12:00 on a fixed day, plus `secs`.
pub fn at(secs: i64) -> Timestamp {
    t("2026-03-01T12:00:00Z")
        .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(secs))
        .unwrap()
}

/// Job `train` in `ml`: min 1, max 3, replicas 2, `python /workspace/train.py`.
pub fn job() -> ElasticJob {
    let mut job = ElasticJob::new(
        "train",
        ElasticJobSpec {
            min_replicas: 1,
            max_replicas: 3,
            replicas: Some(2),
            nproc_per_node: NprocPerNode::default(),
            max_restarts: 3,
            rendezvous: Default::default(),
            failure_policy: Default::default(),
            run_policy: Default::default(),
            launcher: Default::default(),
            gang: None,
            template: PodTemplateSpec {
                metadata: None,
                spec: Some(PodSpec {
                    containers: vec![Container {
                        name: "trainer".into(),
                        image: Some("pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime".into()),
                        command: Some(vec!["python".into(), "/workspace/train.py".into()]),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
            },
        },
    );
    job.metadata.namespace = Some("ml".into());
    job.metadata.uid = Some(UID.into());
    job.metadata.generation = Some(1);
    job
}

/// Pod `index` in `phase`, created at `at(0)`, on node `node-<index>` which is ready.
pub fn pod(index: u32, phase: Phase) -> ObservedPod {
    ObservedPod {
        name: format!("train-worker-{index}"),
        uid: Some(format!("pod-{index}-a")),
        index,
        phase,
        ready: phase == Phase::Running,
        created: Some(at(0)),
        deletion: None,
        deletion_requested: None,
        node: Some(format!("node-{index}")),
        node_ready: Some(true),
        disruption: None,
        termination: Termination::default(),
        waiting: None,
        ip: Some(format!("10.1.0.{}", index + 10)),
        launcher: None,
    }
}

pub fn running(index: u32) -> ObservedPod {
    pod(index, Phase::Running)
}

/// Pod `index` failed at `at(secs)`: the launcher reported a worker exit `code`.
pub fn failed(index: u32, code: i32, secs: i64) -> ObservedPod {
    let mut p = pod(index, Phase::Failed);
    let report = json!({
        "kind": "elastic-launch/v1", "reason": "WorkerFailed", "host": p.name,
        "rank": index * 2 + 1, "localRank": 1, "exitCode": code, "signal": null,
        "message": "RuntimeError: CUDA error: an illegal memory access", "restartCount": 3,
        "maxRestarts": 3, "round": 2, "timestamp": 0,
    });
    p.termination.trainer = Some(ContainerEnd {
        name: "trainer".into(),
        exit_code: 1,
        signal: None,
        reason: Some("Error".into()),
        message: Some(report.to_string()),
        finished_at: Some(at(secs)),
    });
    p
}

/// The same pod index, another pod (a recreation).
pub fn recreated(mut p: ObservedPod, generation: char) -> ObservedPod {
    p.uid = Some(format!("pod-{}-{generation}", p.index));
    p
}
