//! Which accelerator a container asks for: the device-plugin resources that mean "one device per
//! worker" to `nprocPerNode: auto`, and how many of them the container requests.
//!
//! One function, [`accelerator_request`], answers it for the operator (`PET_NPROC_PER_NODE`) and
//! for validation, so both name the same resource.

use k8s_openapi::api::core::v1::Container;

/// NVIDIA's device plugin.
pub const NVIDIA_GPU: &str = "nvidia.com/gpu";
/// AMD's device plugin (ROCm).
pub const AMD_GPU: &str = "amd.com/gpu";
/// Intel's GPU plugin for the i915 driver.
pub const INTEL_I915: &str = "gpu.intel.com/i915";
/// Intel's GPU plugin for the xe driver.
pub const INTEL_XE: &str = "gpu.intel.com/xe";
/// Habana's (Intel Gaudi) device plugin.
pub const HABANA_GAUDI: &str = "habana.ai/gaudi";

/// The resources counted as whole accelerator devices. Intel's plugin also advertises
/// `gpu.intel.com/millicores`, `memory.max`, `tiles` and `i915_monitoring`: shares of a GPU or
/// monitoring access, not devices a worker can own, so they are not listed.
pub const ACCELERATOR_RESOURCES: [&str; 5] =
    [NVIDIA_GPU, AMD_GPU, INTEL_I915, INTEL_XE, HABANA_GAUDI];

/// A container's ask for accelerator devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceleratorRequest {
    /// The resource name, e.g. `amd.com/gpu`.
    pub resource: &'static str,
    /// How many devices (a whole positive number).
    pub count: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AcceleratorError {
    /// A worker process drives one kind of device (PyTorch picks one accelerator per process),
    /// so a container asking for two cannot be sized by `nprocPerNode: auto`.
    #[error(
        "the container {container} asks for more than one kind of accelerator ({}): a worker process uses one kind (torch.accelerator); ask for one of them",
        .resources.join(", ")
    )]
    MoreThanOneKind {
        container: String,
        resources: Vec<&'static str>,
    },
}

/// The accelerator resource the container asks for and how many: for each known resource its
/// limit, else its request (extended resources must have equal limits and requests when both
/// are set), counted when it is a whole positive number. `Ok(None)` when it asks for none.
pub fn accelerator_request(c: &Container) -> Result<Option<AcceleratorRequest>, AcceleratorError> {
    let Some(r) = c.resources.as_ref() else {
        return Ok(None);
    };
    let asked: Vec<AcceleratorRequest> = ACCELERATOR_RESOURCES
        .iter()
        .filter_map(|&resource| {
            let q = r
                .limits
                .as_ref()
                .and_then(|l| l.get(resource))
                .or_else(|| r.requests.as_ref()?.get(resource))?;
            let count = q.0.trim().parse::<u32>().ok().filter(|n| *n > 0)?;
            Some(AcceleratorRequest { resource, count })
        })
        .collect();
    match asked.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(one.clone())),
        many => Err(AcceleratorError::MoreThanOneKind {
            container: c.name.clone(),
            resources: many.iter().map(|a| a.resource).collect(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ResourceRequirements;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    fn asking(limits: &[(&str, &str)], requests: &[(&str, &str)]) -> Container {
        let map = |kv: &[(&str, &str)]| {
            (!kv.is_empty()).then(|| {
                kv.iter()
                    .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
                    .collect()
            })
        };
        Container {
            name: "trainer".into(),
            resources: Some(ResourceRequirements {
                limits: map(limits),
                requests: map(requests),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn req(resource: &'static str, count: u32) -> Option<AcceleratorRequest> {
        Some(AcceleratorRequest { resource, count })
    }

    #[test]
    fn every_vendor_is_counted() {
        for resource in ACCELERATOR_RESOURCES {
            let c = asking(&[(resource, "2"), ("cpu", "4")], &[]);
            assert_eq!(accelerator_request(&c), Ok(req(resource, 2)), "{resource}");
        }
    }

    #[test]
    fn limit_else_request_and_only_whole_positive_numbers() {
        let c = asking(&[], &[(AMD_GPU, "3")]);
        assert_eq!(accelerator_request(&c), Ok(req(AMD_GPU, 3)));
        let c = asking(&[(AMD_GPU, "2")], &[(AMD_GPU, "3")]);
        assert_eq!(accelerator_request(&c), Ok(req(AMD_GPU, 2)));
        for odd in ["0", "1.5", "500m", "-1", "x"] {
            let c = asking(&[(NVIDIA_GPU, odd)], &[]);
            assert_eq!(accelerator_request(&c), Ok(None), "{odd}");
        }
        assert_eq!(accelerator_request(&Container::default()), Ok(None));
    }

    #[test]
    fn gpu_shares_are_not_devices() {
        let c = asking(
            &[
                ("gpu.intel.com/millicores", "500"),
                ("gpu.intel.com/tiles", "2"),
            ],
            &[],
        );
        assert_eq!(accelerator_request(&c), Ok(None));
        let c = asking(&[(INTEL_XE, "1"), ("gpu.intel.com/millicores", "500")], &[]);
        assert_eq!(accelerator_request(&c), Ok(req(INTEL_XE, 1)));
    }

    #[test]
    fn two_kinds_is_an_error_naming_both() {
        let c = asking(&[(NVIDIA_GPU, "1"), (AMD_GPU, "1")], &[]);
        let err = accelerator_request(&c).unwrap_err();
        assert_eq!(
            err,
            AcceleratorError::MoreThanOneKind {
                container: "trainer".into(),
                resources: vec![NVIDIA_GPU, AMD_GPU]
            }
        );
        assert!(
            err.to_string().contains("(nvidia.com/gpu, amd.com/gpu)"),
            "{err}"
        );
        // A zero count of the other kind is no ask.
        let c = asking(&[(NVIDIA_GPU, "0"), (HABANA_GAUDI, "8")], &[]);
        assert_eq!(accelerator_request(&c), Ok(req(HABANA_GAUDI, 8)));
    }
}
