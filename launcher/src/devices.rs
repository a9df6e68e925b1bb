//! How many local workers `--nproc-per-node` means on this machine, found without PyTorch.
//!
//! Discovery (IO) gathers [`DeviceFacts`]; [`resolve_nproc`] is a pure decision over them, so
//! the rules are unit-tested without GPUs.

use std::path::Path;

use crate::config::NprocSpec;

/// What the machine tells us about its devices.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceFacts {
    pub cuda_visible_devices: Option<String>,
    pub nvidia_visible_devices: Option<String>,
    /// Entries under `/proc/driver/nvidia/gpus/`.
    pub proc_nvidia_gpus: usize,
    /// `/dev/nvidia<N>` device nodes.
    pub dev_nvidia: usize,
    /// `ZE_AFFINITY_MASK` (Intel XPU visibility) if set.
    pub ze_affinity_mask: Option<String>,
    /// Intel render nodes (`/sys/class/drm/renderD*` with vendor 0x8086).
    pub intel_render_nodes: usize,
    /// CPUs this process may use: the smaller of its affinity mask and its cgroup quota.
    pub usable_cpus: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    #[error(
        "Cuda is not available. --nproc-per-node={0} needs NVIDIA GPUs: none found in CUDA_VISIBLE_DEVICES, NVIDIA_VISIBLE_DEVICES, /proc/driver/nvidia/gpus or /dev/nvidia*; give a number instead"
    )]
    CudaUnavailable(&'static str),
    #[error(
        "Xpu is not available. --nproc-per-node=xpu needs Intel GPUs: none found in ZE_AFFINITY_MASK or /sys/class/drm; give a number instead"
    )]
    XpuUnavailable,
}

/// The resolved count and the device kind it came from (for the log line torchrun prints).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nproc {
    pub count: u32,
    pub device: &'static str,
}

pub fn resolve_nproc(spec: NprocSpec, facts: &DeviceFacts) -> Result<Nproc, DeviceError> {
    let cpu = Nproc {
        count: facts.usable_cpus.max(1) as u32,
        device: "cpu",
    };
    match spec {
        NprocSpec::Count(count) => Ok(Nproc {
            count,
            device: "explicit",
        }),
        NprocSpec::Cpu => Ok(cpu),
        NprocSpec::Gpu => match gpu_count(facts) {
            0 => Err(DeviceError::CudaUnavailable("gpu")),
            n => Ok(Nproc {
                count: n as u32,
                device: "gpu",
            }),
        },
        NprocSpec::Xpu => match xpu_count(facts) {
            0 => Err(DeviceError::XpuUnavailable),
            n => Ok(Nproc {
                count: n as u32,
                device: "xpu",
            }),
        },
        NprocSpec::Auto => match (gpu_count(facts), xpu_count(facts)) {
            (0, 0) => Ok(cpu),
            (0, n) => Ok(Nproc {
                count: n as u32,
                device: "xpu",
            }),
            (n, _) => Ok(Nproc {
                count: n as u32,
                device: "gpu",
            }),
        },
    }
}

/// Visible NVIDIA GPUs. `CUDA_VISIBLE_DEVICES` is what CUDA itself honours, so when set it is
/// the answer (Kubernetes device plugins set it, or `NVIDIA_VISIBLE_DEVICES`, to the GPUs the
/// container was given); otherwise the driver's view of the machine.
pub fn gpu_count(facts: &DeviceFacts) -> usize {
    if let Some(list) = &facts.cuda_visible_devices {
        return visible_list_len(list);
    }
    let physical = facts.proc_nvidia_gpus.max(facts.dev_nvidia);
    match facts.nvidia_visible_devices.as_deref().map(str::trim) {
        None | Some("all") => physical,
        Some("none") | Some("void") => 0,
        Some(list) => visible_list_len(list),
    }
}

fn xpu_count(facts: &DeviceFacts) -> usize {
    match &facts.ze_affinity_mask {
        Some(mask) => visible_list_len(mask),
        None => facts.intel_render_nodes,
    }
}

/// Entries of a device list such as `0,1,GPU-uuid`; CUDA stops at the first invalid entry
/// (`-1`), so do we.
fn visible_list_len(list: &str) -> usize {
    list.split(',')
        .map(str::trim)
        .take_while(|entry| !entry.is_empty() && !entry.starts_with('-') && *entry != "NoDevFiles")
        .count()
}

/// Reads the facts from this process's environment and the machine.
pub fn discover() -> DeviceFacts {
    DeviceFacts {
        cuda_visible_devices: std::env::var("CUDA_VISIBLE_DEVICES").ok(),
        nvidia_visible_devices: std::env::var("NVIDIA_VISIBLE_DEVICES").ok(),
        proc_nvidia_gpus: count_entries(Path::new("/proc/driver/nvidia/gpus"), |_| true),
        dev_nvidia: count_entries(Path::new("/dev"), |name| {
            name.strip_prefix("nvidia")
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        }),
        ze_affinity_mask: std::env::var("ZE_AFFINITY_MASK").ok(),
        intel_render_nodes: intel_render_nodes(),
        usable_cpus: usable_cpus(),
    }
}

fn count_entries(dir: &Path, keep: impl Fn(&str) -> bool) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| keep(&e.file_name().to_string_lossy()))
                .count()
        })
        .unwrap_or(0)
}

fn intel_render_nodes() -> usize {
    let Ok(entries) = std::fs::read_dir("/sys/class/drm") else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("renderD"))
        .filter(|e| {
            std::fs::read_to_string(e.path().join("device/vendor"))
                .is_ok_and(|v| v.trim() == "0x8086")
        })
        .count()
}

/// CPUs this process can actually use: its affinity mask, capped by a cgroup v2 (`cpu.max`) or
/// v1 (`cpu.cfs_quota_us`) quota, rounded up. A container limited to 2 CPUs on a 64-core node
/// should start 2 workers with `cpu`, not 64.
pub fn usable_cpus() -> usize {
    let affinity = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0))
        .map(|set| {
            (0..nix::sched::CpuSet::count())
                .filter(|&i| set.is_set(i).unwrap_or(false))
                .count()
        })
        .ok()
        .filter(|&n| n > 0)
        .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
        .unwrap_or(1);
    match cgroup_cpu_quota() {
        Some(quota) => affinity.min(quota).max(1),
        None => affinity,
    }
}

fn cgroup_cpu_quota() -> Option<usize> {
    if let Ok(text) = std::fs::read_to_string("/sys/fs/cgroup/cpu.max") {
        return parse_cgroup_v2_cpu_max(&text);
    }
    let quota = std::fs::read_to_string("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").ok()?;
    let period = std::fs::read_to_string("/sys/fs/cgroup/cpu/cpu.cfs_period_us").ok()?;
    quota_to_cpus(quota.trim().parse().ok()?, period.trim().parse().ok()?)
}

/// `cpu.max` is `<quota|max> <period>`.
pub fn parse_cgroup_v2_cpu_max(text: &str) -> Option<usize> {
    let mut parts = text.split_whitespace();
    let quota = parts.next()?;
    let period: i64 = parts.next()?.parse().ok()?;
    quota_to_cpus(quota.parse().ok()?, period)
}

fn quota_to_cpus(quota: i64, period: i64) -> Option<usize> {
    (quota > 0 && period > 0).then(|| ((quota + period - 1) / period) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> DeviceFacts {
        DeviceFacts {
            usable_cpus: 8,
            ..Default::default()
        }
    }

    #[test]
    fn explicit_and_cpu() {
        assert_eq!(
            resolve_nproc(NprocSpec::Count(3), &facts()).unwrap().count,
            3
        );
        assert_eq!(
            resolve_nproc(NprocSpec::Cpu, &facts()).unwrap(),
            Nproc {
                count: 8,
                device: "cpu"
            }
        );
    }

    #[test]
    fn auto_falls_back_to_cpus_without_gpus() {
        assert_eq!(
            resolve_nproc(NprocSpec::Auto, &facts()).unwrap(),
            Nproc {
                count: 8,
                device: "cpu"
            }
        );
    }

    #[test]
    fn gpu_without_gpus_is_torchruns_error() {
        let err = resolve_nproc(NprocSpec::Gpu, &facts()).unwrap_err();
        assert!(
            err.to_string().starts_with("Cuda is not available."),
            "{err}"
        );
        let err = resolve_nproc(NprocSpec::Xpu, &facts()).unwrap_err();
        assert!(
            err.to_string().starts_with("Xpu is not available."),
            "{err}"
        );
    }

    #[test]
    fn cuda_visible_devices_wins() {
        let f = DeviceFacts {
            cuda_visible_devices: Some("0,2,5".into()),
            dev_nvidia: 8,
            ..facts()
        };
        assert_eq!(
            resolve_nproc(NprocSpec::Auto, &f).unwrap(),
            Nproc {
                count: 3,
                device: "gpu"
            }
        );
        assert_eq!(resolve_nproc(NprocSpec::Gpu, &f).unwrap().count, 3);
        let hidden = DeviceFacts {
            cuda_visible_devices: Some("".into()),
            dev_nvidia: 8,
            ..facts()
        };
        assert_eq!(
            resolve_nproc(NprocSpec::Auto, &hidden).unwrap().device,
            "cpu"
        );
        let stop = DeviceFacts {
            cuda_visible_devices: Some("1,-1,2".into()),
            ..facts()
        };
        assert_eq!(gpu_count(&stop), 1);
    }

    #[test]
    fn nvidia_visible_devices_and_driver() {
        let all = DeviceFacts {
            nvidia_visible_devices: Some("all".into()),
            proc_nvidia_gpus: 4,
            ..facts()
        };
        assert_eq!(gpu_count(&all), 4);
        let none = DeviceFacts {
            nvidia_visible_devices: Some("none".into()),
            dev_nvidia: 4,
            ..facts()
        };
        assert_eq!(gpu_count(&none), 0);
        let some = DeviceFacts {
            nvidia_visible_devices: Some("GPU-a,GPU-b".into()),
            ..facts()
        };
        assert_eq!(gpu_count(&some), 2);
        let dev = DeviceFacts {
            dev_nvidia: 2,
            ..facts()
        };
        assert_eq!(gpu_count(&dev), 2);
    }

    #[test]
    fn xpu_from_affinity_mask() {
        let f = DeviceFacts {
            ze_affinity_mask: Some("0,1,2".into()),
            ..facts()
        };
        assert_eq!(
            resolve_nproc(NprocSpec::Xpu, &f).unwrap(),
            Nproc {
                count: 3,
                device: "xpu"
            }
        );
        assert_eq!(resolve_nproc(NprocSpec::Auto, &f).unwrap().device, "xpu");
    }

    #[test]
    fn cgroup_quota() {
        assert_eq!(parse_cgroup_v2_cpu_max("max 100000\n"), None);
        assert_eq!(parse_cgroup_v2_cpu_max("200000 100000\n"), Some(2));
        assert_eq!(parse_cgroup_v2_cpu_max("150000 100000"), Some(2));
        assert_eq!(parse_cgroup_v2_cpu_max("garbage"), None);
    }
}
