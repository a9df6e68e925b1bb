//! Bad nodes: new pods (replacements, scale-ups) avoid the nodes where this job recently lost a
//! pod because of the node, so that a flaky node does not eat the infrastructure budget one
//! replacement at a time (`spec.failurePolicy.avoidFailedNodes`).
//!
//! The facts come from `status.recentFailures` alone (node, reason, time), so the decision is a
//! pure function of the job, survives an operator restart and needs no memory of its own.
//!
//! Which failures blame the node: NodeLost (the node stopped reporting, or its pod was garbage
//! collected / evicted from a NotReady node), NodeShutdown, NodeRejected (the kubelet refused
//! the pod: `UnexpectedAdmissionError`, `OutOf<resource>` from a device plugin that lost its
//! devices, a node whose labels no longer match) and DeviceUnavailable (the launcher found none
//! of the devices the pod was given). Not: anything of the training code (a worker's exit 1 on a
//! node says nothing about the node), preemption and eviction (capacity decisions; node pressure
//! has its own taints that the scheduler honours), a deleted pod, a rendezvous or store failure
//! (the network between pods, usually another pod's fault).
//!
//! How: a *preferred* node-affinity term (weight 100) whose `matchFields` say `metadata.name
//! NotIn` each avoided node. Preferred, not required: a required term on a small cluster (or a
//! job whose pods fit on few nodes) can leave a replacement Pending forever, and a pod's
//! affinity cannot be changed once it exists, so the window running out would not free it.
//! Weight 100 is the most a term can have: with the NodeAffinity plugin's default weight the
//! scheduler puts the pod on any other node that fits rather than on an avoided one, and still
//! uses an avoided node when nothing else fits. `metadata.name` rather than the
//! `kubernetes.io/hostname` label: the failures record the node's name, which is not always
//! its host name label (cloud providers may differ).

use k8s_openapi::api::core::v1::{
    Affinity, NodeAffinity, NodeSelectorRequirement, NodeSelectorTerm, PodSpec,
    PreferredSchedulingTerm,
};
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use elasticjob_crds::spec::AvoidFailedNodes;
use elasticjob_crds::status::{FailureCategory, FailureRecord};

use crate::event::{self, Event};
use crate::failure::reason;

/// The failure reasons that blame the node the pod ran on.
pub const NODE_REASONS: [&str; 4] = [
    reason::NODE_LOST,
    reason::NODE_SHUTDOWN,
    reason::NODE_REJECTED,
    reason::DEVICE_UNAVAILABLE,
];

/// The weight of the avoiding term: the most a preferred term can have.
pub const AVOID_WEIGHT: i32 = 100;

/// The node field the avoiding term matches: the node's name, as the failures record it.
pub const NODE_NAME_FIELD: &str = "metadata.name";

/// Whether a failure blames its node.
pub fn blames_node(f: &FailureRecord) -> bool {
    f.category == FailureCategory::Infrastructure && NODE_REASONS.contains(&f.reason.as_str())
}

/// The nodes new pods of the job should avoid at `now`: the nodes of failures that blame the
/// node within the last `windowSeconds`, newest first, each once, at most `maxNodes`. Empty
/// when the policy is off.
pub fn avoided_nodes(
    failures: &[FailureRecord],
    policy: &AvoidFailedNodes,
    now: Timestamp,
) -> Vec<String> {
    if !policy.enabled {
        return Vec::new();
    }
    let window = SignedDuration::from_secs(policy.window_seconds.max(0).into());
    let mut recent: Vec<(Timestamp, &str)> = failures
        .iter()
        .filter(|f| blames_node(f))
        // A failure stamped after `now` (another clock) is recent.
        .filter(|f| now.duration_since(f.time.0) <= window)
        .filter_map(|f| Some((f.time.0, f.node.as_deref().filter(|n| !n.is_empty())?)))
        .collect();
    // Newest first (the status keeps them so; not relied on): the cap keeps the freshest.
    recent.sort_by_key(|&(time, _)| std::cmp::Reverse(time));
    let mut nodes: Vec<String> = Vec::new();
    for (_, node) in recent {
        if nodes.len() >= policy.max_nodes.max(0) as usize {
            break;
        }
        if !nodes.iter().any(|n| n == node) {
            nodes.push(node.to_string());
        }
    }
    nodes
}

/// Adds to the pod spec a preferred node-affinity term that avoids `nodes`, after the
/// template's own affinity (every term of it is kept). Nothing when `nodes` is empty.
pub fn avoid_nodes(pod_spec: &mut PodSpec, nodes: &[String]) {
    if nodes.is_empty() {
        return;
    }
    let term = PreferredSchedulingTerm {
        weight: AVOID_WEIGHT,
        preference: NodeSelectorTerm {
            match_expressions: None,
            // One requirement per node (the apiserver allows one value per field requirement);
            // the requirements of a term all hold: the node is none of them.
            match_fields: Some(
                nodes
                    .iter()
                    .map(|n| NodeSelectorRequirement {
                        key: NODE_NAME_FIELD.into(),
                        operator: "NotIn".into(),
                        values: Some(vec![n.clone()]),
                    })
                    .collect(),
            ),
        },
    };
    pod_spec
        .affinity
        .get_or_insert_with(Affinity::default)
        .node_affinity
        .get_or_insert_with(NodeAffinity::default)
        .preferred_during_scheduling_ignored_during_execution
        .get_or_insert_with(Vec::new)
        .push(term);
}

/// The event saying which new pods avoid which nodes, when any do.
pub fn event(pods: &[String], nodes: &[String], policy: &AvoidFailedNodes) -> Option<Event> {
    if pods.is_empty() || nodes.is_empty() {
        return None;
    }
    Some(Event::normal(
        event::reason::AVOIDING_NODES,
        format!(
            "new pods {} prefer other nodes than {}: the job lost pods there to the node within the last {} s (failurePolicy.avoidFailedNodes)",
            pods.join(", "),
            nodes.join(", "),
            policy.window_seconds
        ),
    ))
}

/// The nodes a pod spec's avoiding term names (what [`avoid_nodes`] added), for tests and logs.
pub fn nodes_avoided_by(pod_spec: &PodSpec) -> Vec<String> {
    pod_spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.preferred_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .into_iter()
        .flatten()
        .filter(|t| t.weight == AVOID_WEIGHT)
        .flat_map(|t| t.preference.match_fields.iter().flatten())
        .filter(|r| r.key == NODE_NAME_FIELD && r.operator == "NotIn")
        .flat_map(|r| r.values.iter().flatten().cloned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        NodeSelector, PodAffinityTerm, PodAntiAffinity, WeightedPodAffinityTerm,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};

    const NOW: i64 = 1_800_000_000;

    fn at(secs_ago: i64) -> Time {
        Time(Timestamp::from_second(NOW - secs_ago).unwrap())
    }

    fn now() -> Timestamp {
        Timestamp::from_second(NOW).unwrap()
    }

    fn failure(
        node: &str,
        reason: &str,
        category: FailureCategory,
        secs_ago: i64,
    ) -> FailureRecord {
        FailureRecord {
            time: at(secs_ago),
            pod: "j-worker-1".into(),
            pod_uid: Some(format!("uid-{node}-{secs_ago}")),
            replica_index: Some(1),
            node: Some(node.into()),
            rank: None,
            local_rank: None,
            exit_code: None,
            signal: None,
            reason: reason.into(),
            category,
            permanent: false,
            message: String::new(),
        }
    }

    fn infra(node: &str, reason: &str, secs_ago: i64) -> FailureRecord {
        failure(node, reason, FailureCategory::Infrastructure, secs_ago)
    }

    fn on() -> AvoidFailedNodes {
        AvoidFailedNodes::default()
    }

    #[test]
    fn defaults_are_on_for_30_minutes_and_3_nodes() {
        let d = AvoidFailedNodes::default();
        assert!(d.enabled);
        assert_eq!((d.window_seconds, d.max_nodes), (1800, 3));
        // An absent field reads as the defaults.
        let p: elasticjob_crds::spec::FailurePolicy = serde_json::from_str("{}").unwrap();
        assert_eq!(p.avoid_failed_nodes, d);
        let p: elasticjob_crds::spec::FailurePolicy =
            serde_json::from_str(r#"{"avoidFailedNodes": {"enabled": false}}"#).unwrap();
        assert!(!p.avoid_failed_nodes.enabled);
        assert_eq!(p.avoid_failed_nodes.window_seconds, 1800);
    }

    #[test]
    fn node_failures_are_avoided_application_failures_are_not() {
        let failures = vec![
            infra("lost", reason::NODE_LOST, 10),
            infra("shut", reason::NODE_SHUTDOWN, 20),
            infra("refused", reason::NODE_REJECTED, 30),
            failure(
                "crashed",
                reason::WORKER_FAILED,
                FailureCategory::Application,
                5,
            ),
            failure("oom", reason::OOM_KILLED, FailureCategory::Application, 6),
            infra("preempted", reason::PREEMPTED, 7),
            infra("evicted", reason::EVICTED, 8),
            infra("deleted", reason::POD_DELETED, 9),
            infra("rdzv", reason::RENDEZVOUS_FAILED, 11),
            infra("stopped", reason::POD_STOPPED, 12),
        ];
        let policy = AvoidFailedNodes {
            max_nodes: 10,
            ..on()
        };
        assert_eq!(
            avoided_nodes(&failures, &policy, now()),
            ["lost", "shut", "refused"]
        );
        let device = [infra("gpu", reason::DEVICE_UNAVAILABLE, 1)];
        assert_eq!(avoided_nodes(&device, &policy, now()), ["gpu"]);
    }

    #[test]
    fn only_failures_within_the_window_count() {
        let failures = vec![
            infra("fresh", reason::NODE_LOST, 1799),
            infra("edge", reason::NODE_LOST, 1800),
            infra("old", reason::NODE_LOST, 1801),
            // Another clock ahead of ours: recent.
            infra("ahead", reason::NODE_REJECTED, -30),
        ];
        assert_eq!(
            avoided_nodes(&failures, &on(), now()),
            ["ahead", "fresh", "edge"]
        );
        let short = AvoidFailedNodes {
            window_seconds: 60,
            ..on()
        };
        assert_eq!(avoided_nodes(&failures, &short, now()), ["ahead"]);
    }

    #[test]
    fn the_newest_nodes_are_kept_up_to_the_cap_each_once() {
        let failures = vec![
            infra("a", reason::NODE_LOST, 50),
            infra("b", reason::NODE_LOST, 10),
            infra("a", reason::NODE_REJECTED, 5),
            infra("c", reason::NODE_LOST, 30),
            infra("d", reason::NODE_LOST, 40),
        ];
        assert_eq!(avoided_nodes(&failures, &on(), now()), ["a", "b", "c"]);
        let one = AvoidFailedNodes {
            max_nodes: 1,
            ..on()
        };
        assert_eq!(avoided_nodes(&failures, &one, now()), ["a"]);
    }

    #[test]
    fn failures_without_a_node_are_passed_over() {
        let mut f = infra("x", reason::NODE_REJECTED, 1);
        f.node = None;
        let mut g = infra("", reason::NODE_LOST, 1);
        g.node = Some(String::new());
        assert!(avoided_nodes(&[f, g], &on(), now()).is_empty());
    }

    #[test]
    fn off_avoids_nothing() {
        let failures = vec![infra("lost", reason::NODE_LOST, 1)];
        let off = AvoidFailedNodes {
            enabled: false,
            ..on()
        };
        assert!(avoided_nodes(&failures, &off, now()).is_empty());
    }

    #[test]
    fn the_term_is_preferred_and_names_each_node() {
        let mut spec = PodSpec::default();
        avoid_nodes(&mut spec, &["n1".into(), "n2".into()]);
        let na = spec.affinity.unwrap().node_affinity.unwrap();
        assert!(
            na.required_during_scheduling_ignored_during_execution
                .is_none(),
            "a required term could leave the pod Pending forever"
        );
        let terms = na
            .preferred_during_scheduling_ignored_during_execution
            .unwrap();
        assert_eq!(terms.len(), 1);
        assert_eq!(terms[0].weight, 100);
        let v = serde_json::to_value(&terms[0].preference).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"matchFields": [
                {"key": "metadata.name", "operator": "NotIn", "values": ["n1"]},
                {"key": "metadata.name", "operator": "NotIn", "values": ["n2"]},
            ]})
        );
    }

    #[test]
    fn the_event_names_the_pods_and_the_nodes() {
        assert_eq!(event(&["j-worker-1".into()], &[], &on()), None);
        assert_eq!(event(&[], &["n".into()], &on()), None);
        let e = event(&["j-worker-1".into()], &["n1".into(), "n2".into()], &on()).unwrap();
        assert_eq!(e.reason, "AvoidingNodes");
        assert!(
            e.note
                .contains("new pods j-worker-1 prefer other nodes than n1, n2"),
            "{}",
            e.note
        );
    }

    #[test]
    fn only_new_pods_get_the_term() {
        let settings = crate::Settings {
            launcher_image: Some("launcher:1".into()),
            ..Default::default()
        };
        let job = crate::fixtures::job();
        let plain = crate::desired::pod(&job, 1, &settings).unwrap();
        assert_eq!(
            crate::desired::new_pod(&job, 1, &settings, &[]).unwrap(),
            plain
        );
        let avoiding = crate::desired::new_pod(&job, 1, &settings, &["bad".into()]).unwrap();
        assert_eq!(nodes_avoided_by(avoiding.spec.as_ref().unwrap()), ["bad"]);
        // Nothing else differs.
        let mut without = avoiding.clone();
        without.spec.as_mut().unwrap().affinity = plain.spec.as_ref().unwrap().affinity.clone();
        assert_eq!(without, plain);
    }

    #[test]
    fn no_nodes_leave_the_spec_alone() {
        let mut spec = PodSpec::default();
        avoid_nodes(&mut spec, &[]);
        assert_eq!(spec, PodSpec::default());
    }

    #[test]
    fn the_templates_affinity_is_kept() {
        let required = NodeSelector {
            node_selector_terms: vec![NodeSelectorTerm {
                match_expressions: Some(vec![NodeSelectorRequirement {
                    key: "gpu-type".into(),
                    operator: "In".into(),
                    values: Some(vec!["h100".into()]),
                }]),
                match_fields: None,
            }],
        };
        let theirs = PreferredSchedulingTerm {
            weight: 7,
            preference: NodeSelectorTerm {
                match_expressions: Some(vec![NodeSelectorRequirement {
                    key: "zone".into(),
                    operator: "In".into(),
                    values: Some(vec!["a".into()]),
                }]),
                match_fields: None,
            },
        };
        let anti = PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![
                WeightedPodAffinityTerm {
                    weight: 100,
                    pod_affinity_term: PodAffinityTerm {
                        topology_key: "kubernetes.io/hostname".into(),
                        label_selector: Some(LabelSelector::default()),
                        ..Default::default()
                    },
                },
            ]),
            ..Default::default()
        };
        let mut spec = PodSpec {
            affinity: Some(Affinity {
                node_affinity: Some(NodeAffinity {
                    required_during_scheduling_ignored_during_execution: Some(required.clone()),
                    preferred_during_scheduling_ignored_during_execution: Some(vec![
                        theirs.clone(),
                    ]),
                }),
                pod_anti_affinity: Some(anti.clone()),
                pod_affinity: None,
            }),
            ..Default::default()
        };
        avoid_nodes(&mut spec, &["bad".into()]);
        let a = spec.affinity.as_ref().unwrap();
        assert_eq!(a.pod_anti_affinity.as_ref(), Some(&anti));
        let na = a.node_affinity.as_ref().unwrap();
        assert_eq!(
            na.required_during_scheduling_ignored_during_execution
                .as_ref(),
            Some(&required)
        );
        let preferred = na
            .preferred_during_scheduling_ignored_during_execution
            .as_ref()
            .unwrap();
        assert_eq!(preferred.len(), 2);
        assert_eq!(preferred[0], theirs);
        assert_eq!(nodes_avoided_by(&spec), ["bad"]);
    }
}
