//! Gang scheduling with the coscheduling plugin of kubernetes-sigs/scheduler-plugins
//! (spec.gang): a PodGroup (`scheduling.x-k8s.io/v1alpha1`) named after the job, whose
//! minMember is minReplicas, and pods that name it and its scheduler. The plugin holds the
//! pods of a group at its Permit stage until minMember of them fit, then binds them together,
//! or sends them all back after scheduleTimeoutSeconds: two jobs that cannot both reach their
//! minimum never each hold part of the cluster. Pods above the minimum join as they fit.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PodSpec;
use kube::ResourceExt;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ObjectMeta};
use serde_json::json;

use elasticjob_crds::spec::ElasticJob;

use crate::desired::{self, DesiredError};

/// The label by which the coscheduling plugin finds a pod's group.
pub const POD_GROUP_LABEL: &str = "scheduling.x-k8s.io/pod-group";

pub fn pod_group_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("scheduling.x-k8s.io", "v1alpha1", "PodGroup"),
        "podgroups",
    )
}

/// The job's PodGroup, when it is gang-scheduled.
pub fn pod_group(job: &ElasticJob) -> Result<Option<DynamicObject>, DesiredError> {
    let Some(gang) = &job.spec.gang else {
        return Ok(None);
    };
    let name = job.name_any();
    Ok(Some(DynamicObject {
        types: Some(kube::api::TypeMeta {
            api_version: "scheduling.x-k8s.io/v1alpha1".into(),
            kind: "PodGroup".into(),
        }),
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: job.namespace(),
            labels: Some(desired::labels(&name)),
            owner_references: Some(vec![desired::owner_reference(job)?]),
            ..ObjectMeta::default()
        },
        data: json!({"spec": {
            "minMember": job.spec.min_pods(),
            "scheduleTimeoutSeconds": gang.schedule_timeout_seconds,
        }}),
    }))
}

/// Puts a pod of a gang-scheduled job in its group, under the gang's scheduler.
pub fn join(job: &ElasticJob, spec: &mut PodSpec, labels: &mut BTreeMap<String, String>) {
    if let Some(gang) = &job.spec.gang {
        spec.scheduler_name = Some(gang.scheduler_name.clone());
        labels.insert(POD_GROUP_LABEL.to_string(), job.name_any());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::job;
    use elasticjob_crds::spec::{GangPolicy, default_gang_scheduler};

    #[test]
    fn a_gang_job_gets_a_pod_group_of_its_minimum_and_its_pods_join_it() {
        let mut j = job();
        j.spec.min_replicas = 2;
        j.spec.max_replicas = 4;
        assert!(pod_group(&j).unwrap().is_none());
        j.spec.gang = Some(GangPolicy {
            scheduler_name: default_gang_scheduler(),
            schedule_timeout_seconds: 30,
        });
        let group = pod_group(&j).unwrap().unwrap();
        assert_eq!(group.name_any(), j.name_any());
        assert_eq!(group.data["spec"]["minMember"], 2);
        assert_eq!(group.data["spec"]["scheduleTimeoutSeconds"], 30);
        assert_eq!(group.owner_references()[0].uid, j.uid().unwrap());

        let settings = crate::Settings {
            launcher_image: Some("ghcr.io/elasticjob/elastic-launch:0.1.0".into()),
            ..crate::Settings::default()
        };
        let pod = desired::pod(&j, 3, &settings).unwrap();
        let spec = pod.spec.unwrap();
        assert_eq!(
            spec.scheduler_name.as_deref(),
            Some("scheduler-plugins-scheduler")
        );
        assert_eq!(pod.metadata.labels.unwrap()[POD_GROUP_LABEL], j.name_any());
    }
}
