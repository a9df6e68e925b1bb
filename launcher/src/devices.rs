//! How many local workers `--nproc-per-node` means on this machine, found without PyTorch.
//!
//! Discovery (IO) gathers [`DeviceFacts`]; [`resolve_nproc`] is a pure decision over them, so
//! the rules are unit-tested without GPUs. The rules follow torchrun's
//! `determine_local_world_size`: `gpu` is `torch.cuda.device_count()`, which counts NVIDIA GPUs,
//! or AMD GPUs on a ROCm build; `xpu` counts Intel GPUs; `auto` takes whichever accelerator is
//! there (`torch.accelerator`: CUDA/ROCm, XPU, HPU for Habana Gaudi), else the CPUs.
//!
//! In a container only the device nodes it was given exist under /dev, while /sys shows the
//! whole host: devices are counted in /dev, and /sys only tells whose a device node is. The
//! vendors' visible-device variables, set by device plugins and users, win over both.

use std::path::Path;

use crate::config::NprocSpec;

/// PCI vendor ids, as `/sys/class/*/device/vendor` shows them.
const AMD_VENDOR: &str = "0x1002";
const INTEL_VENDOR: &str = "0x8086";
const HABANA_VENDOR: &str = "0x1da3";

/// What the machine tells us about its devices.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceFacts {
    pub cuda_visible_devices: Option<String>,
    pub nvidia_visible_devices: Option<String>,
    /// Entries under `/proc/driver/nvidia/gpus/`.
    pub proc_nvidia_gpus: usize,
    /// `/dev/nvidia<N>` device nodes.
    pub dev_nvidia: usize,
    /// `ROCR_VISIBLE_DEVICES` (the ROCm runtime's visibility, applied first) if set.
    pub rocr_visible_devices: Option<String>,
    /// `HIP_VISIBLE_DEVICES` (HIP's, over ROCr's; HIP also honours `CUDA_VISIBLE_DEVICES`).
    pub hip_visible_devices: Option<String>,
    /// `/dev/kfd`, AMD's compute driver: without it ROCm sees no GPU.
    pub dev_kfd: bool,
    /// `/dev/dri/renderD*` nodes that are AMD's: vendor 0x1002 in /sys, a render minor in the
    /// KFD topology, or (with `/dev/kfd` present) a vendor /sys does not tell.
    pub amd_render_nodes: usize,
    /// `ZE_AFFINITY_MASK` (Intel XPU visibility) if set.
    pub ze_affinity_mask: Option<String>,
    /// `/dev/dri/renderD*` nodes whose vendor in /sys is Intel's (0x8086).
    pub intel_render_nodes: usize,
    /// `HABANA_VISIBLE_DEVICES` (set by Habana's device plugin and container runtime) if set.
    pub habana_visible_devices: Option<String>,
    /// Gaudi devices: `/dev/accel/accel<N>` (vendor 0x1da3, or not told by /sys), else the
    /// older `/dev/hl<N>`.
    pub gaudi_devices: usize,
    /// CPUs this process may use: the smaller of its affinity mask and its cgroup quota.
    pub usable_cpus: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    #[error(
        "Cuda is not available. --nproc-per-node={0} needs NVIDIA or AMD GPUs: none found in CUDA_VISIBLE_DEVICES, NVIDIA_VISIBLE_DEVICES, /proc/driver/nvidia/gpus, /dev/nvidia*, ROCR_VISIBLE_DEVICES, HIP_VISIBLE_DEVICES or /dev/kfd with /dev/dri/renderD*; give a number instead"
    )]
    CudaUnavailable(&'static str),
    #[error(
        "Xpu is not available. --nproc-per-node=xpu needs Intel GPUs: none found in ZE_AFFINITY_MASK or /dev/dri/renderD* (Intel's per /sys/class/drm); give a number instead"
    )]
    XpuUnavailable,
}

/// What the workers were counted from (for the log line torchrun prints, which names torch's
/// device type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    /// `--nproc-per-node=N`.
    Explicit,
    Cpu,
    NvidiaGpu,
    AmdGpu,
    IntelXpu,
    HabanaGaudi,
}

impl Device {
    pub fn as_str(self) -> &'static str {
        match self {
            Device::Explicit => "explicit",
            Device::Cpu => "cpu",
            Device::NvidiaGpu => "cuda (NVIDIA GPU)",
            Device::AmdGpu => "cuda (AMD GPU, ROCm)",
            Device::IntelXpu => "xpu (Intel GPU)",
            Device::HabanaGaudi => "hpu (Habana Gaudi)",
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The resolved count and the device kind it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nproc {
    pub count: u32,
    pub device: Device,
}

pub fn resolve_nproc(spec: NprocSpec, facts: &DeviceFacts) -> Result<Nproc, DeviceError> {
    let found = |device, n: usize| {
        (n > 0).then_some(Nproc {
            count: n as u32,
            device,
        })
    };
    let cpu = Nproc {
        count: facts.usable_cpus.max(1) as u32,
        device: Device::Cpu,
    };
    // torch.cuda on one build is either CUDA (NVIDIA) or ROCm (AMD).
    let cuda = || {
        found(Device::NvidiaGpu, nvidia_count(facts)).or(found(Device::AmdGpu, amd_count(facts)))
    };
    match spec {
        NprocSpec::Count(count) => Ok(Nproc {
            count,
            device: Device::Explicit,
        }),
        NprocSpec::Cpu => Ok(cpu),
        NprocSpec::Gpu => cuda().ok_or(DeviceError::CudaUnavailable("gpu")),
        NprocSpec::Xpu => {
            found(Device::IntelXpu, xpu_count(facts)).ok_or(DeviceError::XpuUnavailable)
        }
        // torch.accelerator's order: CUDA (or ROCm), XPU, HPU.
        NprocSpec::Auto => Ok(cuda()
            .or(found(Device::IntelXpu, xpu_count(facts)))
            .or(found(Device::HabanaGaudi, gaudi_count(facts)))
            .unwrap_or(cpu)),
    }
}

/// Visible NVIDIA GPUs. `CUDA_VISIBLE_DEVICES` is what CUDA itself honours, so when set it is
/// the answer (Kubernetes device plugins set it, or `NVIDIA_VISIBLE_DEVICES`, to the GPUs the
/// container was given), unless the machine has AMD GPUs and no NVIDIA ones: then it is HIP's
/// (see [`amd_count`]). Otherwise the driver's view of the machine.
pub fn nvidia_count(facts: &DeviceFacts) -> usize {
    let physical = facts.proc_nvidia_gpus.max(facts.dev_nvidia);
    if let Some(list) = &facts.cuda_visible_devices {
        let amd_machine =
            physical == 0 && facts.nvidia_visible_devices.is_none() && amd_base(facts).is_some();
        return if amd_machine {
            0
        } else {
            visible_list_len(list)
        };
    }
    visible_of(facts.nvidia_visible_devices.as_deref(), physical)
}

/// The AMD GPUs ROCr shows: `ROCR_VISIBLE_DEVICES` when set, else the AMD render nodes the
/// container was given (with `/dev/kfd`). None when there is no sign of AMD GPUs.
fn amd_base(facts: &DeviceFacts) -> Option<usize> {
    match &facts.rocr_visible_devices {
        Some(list) => Some(visible_list_len(list)),
        None => (facts.dev_kfd && facts.amd_render_nodes > 0).then_some(facts.amd_render_nodes),
    }
}

/// Visible AMD GPUs: ROCr's, narrowed by `HIP_VISIBLE_DEVICES` (else `CUDA_VISIBLE_DEVICES`,
/// which HIP honours too), as the HIP runtime applies them, one over the other.
pub fn amd_count(facts: &DeviceFacts) -> usize {
    let base = amd_base(facts);
    // CUDA_VISIBLE_DEVICES alone is NVIDIA's unless this is an AMD machine.
    let hip = facts
        .hip_visible_devices
        .as_deref()
        .or(base.and(facts.cuda_visible_devices.as_deref()))
        .map(visible_list_len);
    match (base, hip) {
        (Some(b), Some(h)) => b.min(h),
        (Some(n), None) | (None, Some(n)) => n,
        (None, None) => 0,
    }
}

/// Visible Intel GPUs.
pub fn xpu_count(facts: &DeviceFacts) -> usize {
    match &facts.ze_affinity_mask {
        Some(mask) => visible_list_len(mask),
        None => facts.intel_render_nodes,
    }
}

/// Visible Habana Gaudi devices.
pub fn gaudi_count(facts: &DeviceFacts) -> usize {
    visible_of(facts.habana_visible_devices.as_deref(), facts.gaudi_devices)
}

/// A container runtime's visible-devices variable (`NVIDIA_VISIBLE_DEVICES`,
/// `HABANA_VISIBLE_DEVICES`) over the devices present: `all` or unset is all of them.
fn visible_of(var: Option<&str>, physical: usize) -> usize {
    match var.map(str::trim) {
        None | Some("all") => physical,
        Some("none") | Some("void") => 0,
        Some(list) => visible_list_len(list),
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
        usable_cpus: usable_cpus(),
        ..discover_in(Path::new("/"), |name| std::env::var(name).ok())
    }
}

/// The device facts of the machine whose filesystem is at `root` (`/`, or a fake tree in tests)
/// and whose environment is `env`. `usable_cpus` is left 0: it is this process's own.
pub fn discover_in(root: &Path, env: impl Fn(&str) -> Option<String>) -> DeviceFacts {
    let dev = root.join("dev");
    let dev_kfd = dev.join("kfd").exists();
    let kfd_minors = kfd_render_minors(root);
    let (mut amd_render_nodes, mut intel_render_nodes) = (0, 0);
    for minor in numbered(&dev.join("dri"), "renderD") {
        let vendor = sys_vendor(root, "drm", &format!("renderD{minor}"));
        match vendor.as_deref() {
            Some(AMD_VENDOR) => amd_render_nodes += 1,
            Some(INTEL_VENDOR) => intel_render_nodes += 1,
            // KFD lists the render minors of AMD's compute GPUs; and /dev/kfd with a render
            // node /sys says nothing of is an AMD container on a host whose /sys we cannot see.
            None if kfd_minors.contains(&minor) || dev_kfd => amd_render_nodes += 1,
            _ => {}
        }
    }
    let accel = numbered(&dev.join("accel"), "accel")
        .into_iter()
        .filter(|n| {
            sys_vendor(root, "accel", &format!("accel{n}"))
                .is_none_or(|vendor| vendor == HABANA_VENDOR)
        })
        .count();
    let hl = numbered(&dev, "hl").len();
    DeviceFacts {
        cuda_visible_devices: env("CUDA_VISIBLE_DEVICES"),
        nvidia_visible_devices: env("NVIDIA_VISIBLE_DEVICES"),
        proc_nvidia_gpus: count_entries(&root.join("proc/driver/nvidia/gpus"), |_| true),
        dev_nvidia: numbered(&dev, "nvidia").len(),
        rocr_visible_devices: env("ROCR_VISIBLE_DEVICES"),
        hip_visible_devices: env("HIP_VISIBLE_DEVICES"),
        dev_kfd,
        amd_render_nodes,
        ze_affinity_mask: env("ZE_AFFINITY_MASK"),
        intel_render_nodes,
        habana_visible_devices: env("HABANA_VISIBLE_DEVICES"),
        // New drivers name a Gaudi /dev/accel/accel<N>, old ones /dev/hl<N>; never both counted.
        gaudi_devices: accel.max(hl),
        usable_cpus: 0,
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

/// The numbers N of the entries `<prefix>N` in `dir` (`nvidia0`, but not `nvidiactl`).
fn numbered(dir: &Path, prefix: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let n = name.strip_prefix(prefix)?;
            (!n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                .then(|| n.parse().ok())
                .flatten()
        })
        .collect()
}

/// The PCI vendor of `/sys/class/<class>/<name>`, if /sys tells.
fn sys_vendor(root: &Path, class: &str, name: &str) -> Option<String> {
    let path = root
        .join("sys/class")
        .join(class)
        .join(name)
        .join("device/vendor");
    std::fs::read_to_string(path)
        .ok()
        .map(|v| v.trim().to_ascii_lowercase())
}

/// The DRM render minors of the GPUs in the KFD topology (nodes with compute units; CPU nodes
/// have `simd_count 0`).
fn kfd_render_minors(root: &Path) -> Vec<u32> {
    let Ok(nodes) = std::fs::read_dir(root.join("sys/class/kfd/kfd/topology/nodes")) else {
        return Vec::new();
    };
    nodes
        .flatten()
        .filter_map(|node| std::fs::read_to_string(node.path().join("properties")).ok())
        .filter_map(|text| {
            let field = |key: &str| {
                text.lines().find_map(|line| {
                    let (k, v) = line.split_once(char::is_whitespace)?;
                    (k == key).then(|| v.trim().parse::<u64>().ok()).flatten()
                })
            };
            (field("simd_count")? > 0)
                .then(|| field("drm_render_minor")?.try_into().ok())
                .flatten()
        })
        .collect()
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
    use std::collections::HashMap;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn facts() -> DeviceFacts {
        DeviceFacts {
            usable_cpus: 8,
            ..Default::default()
        }
    }

    fn nproc(count: u32, device: Device) -> Nproc {
        Nproc { count, device }
    }

    /// A fake machine root: files (and empty device nodes) at the given paths.
    struct FakeRoot(PathBuf);

    impl FakeRoot {
        fn new(files: &[(&str, &str)]) -> FakeRoot {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let dir = std::env::temp_dir().join(format!(
                "elastic-launch-devices-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            for (path, text) in files {
                let path = dir.join(path);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, text).unwrap();
            }
            std::fs::create_dir_all(&dir).unwrap();
            FakeRoot(dir)
        }

        fn discover(&self, env: &[(&str, &str)]) -> DeviceFacts {
            let env: HashMap<String, String> = env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            DeviceFacts {
                usable_cpus: 8,
                ..discover_in(&self.0, |name| env.get(name).cloned())
            }
        }
    }

    impl Drop for FakeRoot {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn auto(f: &DeviceFacts) -> Nproc {
        resolve_nproc(NprocSpec::Auto, f).unwrap()
    }

    #[test]
    fn explicit_and_cpu() {
        assert_eq!(
            resolve_nproc(NprocSpec::Count(3), &facts()).unwrap().count,
            3
        );
        assert_eq!(
            resolve_nproc(NprocSpec::Cpu, &facts()).unwrap(),
            nproc(8, Device::Cpu)
        );
    }

    #[test]
    fn auto_falls_back_to_cpus_without_gpus() {
        assert_eq!(auto(&facts()), nproc(8, Device::Cpu));
        assert_eq!(
            auto(&FakeRoot::new(&[]).discover(&[])),
            nproc(8, Device::Cpu)
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
        // A Gaudi is no CUDA device: torchrun's `gpu` refuses it as well.
        let gaudi = FakeRoot::new(&[("dev/accel/accel0", "")]).discover(&[]);
        assert_eq!(auto(&gaudi), nproc(1, Device::HabanaGaudi));
        assert!(resolve_nproc(NprocSpec::Gpu, &gaudi).is_err());
    }

    #[test]
    fn cuda_visible_devices_wins() {
        let f = DeviceFacts {
            cuda_visible_devices: Some("0,2,5".into()),
            dev_nvidia: 8,
            ..facts()
        };
        assert_eq!(auto(&f), nproc(3, Device::NvidiaGpu));
        assert_eq!(resolve_nproc(NprocSpec::Gpu, &f).unwrap().count, 3);
        let hidden = DeviceFacts {
            cuda_visible_devices: Some("".into()),
            dev_nvidia: 8,
            ..facts()
        };
        assert_eq!(auto(&hidden).device, Device::Cpu);
        let stop = DeviceFacts {
            cuda_visible_devices: Some("1,-1,2".into()),
            ..facts()
        };
        assert_eq!(nvidia_count(&stop), 1);
    }

    #[test]
    fn nvidia_visible_devices_and_driver() {
        let all = DeviceFacts {
            nvidia_visible_devices: Some("all".into()),
            proc_nvidia_gpus: 4,
            ..facts()
        };
        assert_eq!(nvidia_count(&all), 4);
        let none = DeviceFacts {
            nvidia_visible_devices: Some("none".into()),
            dev_nvidia: 4,
            ..facts()
        };
        assert_eq!(nvidia_count(&none), 0);
        let some = DeviceFacts {
            nvidia_visible_devices: Some("GPU-a,GPU-b".into()),
            ..facts()
        };
        assert_eq!(nvidia_count(&some), 2);
        let dev = DeviceFacts {
            dev_nvidia: 2,
            ..facts()
        };
        assert_eq!(nvidia_count(&dev), 2);
    }

    #[test]
    fn nvidia_device_nodes_in_a_fake_root() {
        // What NVIDIA's device plugin gives a container: two GPUs and the control nodes.
        let root = FakeRoot::new(&[
            ("dev/nvidia0", ""),
            ("dev/nvidia3", ""),
            ("dev/nvidiactl", ""),
            ("dev/nvidia-uvm", ""),
        ]);
        assert_eq!(auto(&root.discover(&[])), nproc(2, Device::NvidiaGpu));
        let f = root.discover(&[("NVIDIA_VISIBLE_DEVICES", "GPU-a")]);
        assert_eq!(auto(&f), nproc(1, Device::NvidiaGpu));
        let root = FakeRoot::new(&[("proc/driver/nvidia/gpus/0000:01:00.0/information", "")]);
        assert_eq!(auto(&root.discover(&[])), nproc(1, Device::NvidiaGpu));
    }

    /// What AMD's device plugin gives a container with two GPUs on a host with four: /dev/kfd
    /// and its two render nodes; /sys is the host's and names all four.
    fn amd_container() -> FakeRoot {
        FakeRoot::new(&[
            ("dev/kfd", ""),
            ("dev/dri/card1", ""),
            ("dev/dri/renderD129", ""),
            ("dev/dri/card3", ""),
            ("dev/dri/renderD131", ""),
            ("sys/class/drm/renderD128/device/vendor", "0x1002\n"),
            ("sys/class/drm/renderD129/device/vendor", "0x1002\n"),
            ("sys/class/drm/renderD130/device/vendor", "0x1002\n"),
            ("sys/class/drm/renderD131/device/vendor", "0x1002\n"),
        ])
    }

    #[test]
    fn amd_gpus_are_the_render_nodes_the_container_was_given() {
        let root = amd_container();
        let f = root.discover(&[]);
        assert_eq!(f.amd_render_nodes, 2);
        assert_eq!(auto(&f), nproc(2, Device::AmdGpu));
        // torch.cuda on ROCm counts AMD GPUs: `gpu` takes them.
        assert_eq!(
            resolve_nproc(NprocSpec::Gpu, &f).unwrap(),
            nproc(2, Device::AmdGpu)
        );
        assert!(resolve_nproc(NprocSpec::Xpu, &f).is_err());
    }

    #[test]
    fn amd_visible_device_variables_narrow_in_rocr_then_hip_order() {
        let root = amd_container();
        let rocr = root.discover(&[("ROCR_VISIBLE_DEVICES", "0")]);
        assert_eq!(auto(&rocr), nproc(1, Device::AmdGpu));
        let hip = root.discover(&[("HIP_VISIBLE_DEVICES", "1")]);
        assert_eq!(auto(&hip), nproc(1, Device::AmdGpu));
        // HIP honours CUDA_VISIBLE_DEVICES too; on an AMD machine it is not NVIDIA's.
        let cuda = root.discover(&[("CUDA_VISIBLE_DEVICES", "0")]);
        assert_eq!(auto(&cuda), nproc(1, Device::AmdGpu));
        // HIP's list indexes ROCr's: it cannot show more than ROCr does.
        let both = root.discover(&[
            ("ROCR_VISIBLE_DEVICES", "GPU-a"),
            ("HIP_VISIBLE_DEVICES", "0,1,2"),
        ]);
        assert_eq!(amd_count(&both), 1);
        let hidden = root.discover(&[("ROCR_VISIBLE_DEVICES", "")]);
        assert_eq!(auto(&hidden).device, Device::Cpu);
    }

    #[test]
    fn amd_vendor_from_kfd_topology_or_dev_kfd() {
        // No DRM vendor in /sys, but the KFD topology lists the render minor of a GPU node.
        let topology = FakeRoot::new(&[
            ("dev/kfd", ""),
            ("dev/dri/renderD128", ""),
            (
                "sys/class/kfd/kfd/topology/nodes/0/properties",
                "cpu_cores_count 16\nsimd_count 0\ndrm_render_minor 0\n",
            ),
            (
                "sys/class/kfd/kfd/topology/nodes/1/properties",
                "simd_count 304\ndrm_render_minor 128\ngpu_id 1234\n",
            ),
        ]);
        assert_eq!(auto(&topology.discover(&[])), nproc(1, Device::AmdGpu));
        // /dev/kfd and render nodes /sys says nothing of: an AMD container (the fake plugin's).
        let bare = FakeRoot::new(&[
            ("dev/kfd", ""),
            ("dev/dri/renderD128", ""),
            ("dev/dri/renderD129", ""),
        ]);
        assert_eq!(auto(&bare.discover(&[])), nproc(2, Device::AmdGpu));
        // Render nodes without /dev/kfd cannot run ROCm.
        let no_kfd = FakeRoot::new(&[("dev/dri/renderD128", "")]);
        assert_eq!(auto(&no_kfd.discover(&[])).device, Device::Cpu);
    }

    #[test]
    fn cuda_visible_devices_is_nvidias_on_a_machine_without_amd_gpus() {
        let f = FakeRoot::new(&[]).discover(&[("CUDA_VISIBLE_DEVICES", "0,1")]);
        assert_eq!(auto(&f), nproc(2, Device::NvidiaGpu));
        assert_eq!(amd_count(&f), 0);
    }

    #[test]
    fn xpu_from_affinity_mask() {
        let f = DeviceFacts {
            ze_affinity_mask: Some("0,1,2".into()),
            ..facts()
        };
        assert_eq!(
            resolve_nproc(NprocSpec::Xpu, &f).unwrap(),
            nproc(3, Device::IntelXpu)
        );
        assert_eq!(auto(&f).device, Device::IntelXpu);
    }

    #[test]
    fn intel_gpus_are_intel_render_nodes_in_dev() {
        // The host has three Intel GPUs (and /sys shows them all); the container was given one,
        // and an AMD node's /sys entry does not make it Intel's.
        let root = FakeRoot::new(&[
            ("dev/dri/card0", ""),
            ("dev/dri/renderD128", ""),
            ("sys/class/drm/renderD128/device/vendor", "0x8086\n"),
            ("sys/class/drm/renderD129/device/vendor", "0x8086\n"),
            ("sys/class/drm/renderD130/device/vendor", "0x8086\n"),
        ]);
        let f = root.discover(&[]);
        assert_eq!(auto(&f), nproc(1, Device::IntelXpu));
        assert_eq!(
            resolve_nproc(NprocSpec::Xpu, &f).unwrap(),
            nproc(1, Device::IntelXpu)
        );
        assert!(resolve_nproc(NprocSpec::Gpu, &f).is_err());
        let masked = root.discover(&[("ZE_AFFINITY_MASK", "0.0,0.1")]);
        assert_eq!(auto(&masked), nproc(2, Device::IntelXpu));
    }

    #[test]
    fn habana_gaudi_devices_and_visible_variable() {
        let root = FakeRoot::new(&[
            ("dev/accel/accel0", ""),
            ("dev/accel/accel_controlD0", ""),
            ("dev/accel/accel1", ""),
            ("dev/accel/accel_controlD1", ""),
            ("sys/class/accel/accel0/device/vendor", "0x1da3\n"),
            ("sys/class/accel/accel1/device/vendor", "0x1da3\n"),
        ]);
        assert_eq!(auto(&root.discover(&[])), nproc(2, Device::HabanaGaudi));
        let f = root.discover(&[("HABANA_VISIBLE_DEVICES", "3")]);
        assert_eq!(auto(&f), nproc(1, Device::HabanaGaudi));
        let all = root.discover(&[("HABANA_VISIBLE_DEVICES", "all")]);
        assert_eq!(gaudi_count(&all), 2);
        // Older drivers: /dev/hl<N>.
        let old = FakeRoot::new(&[("dev/hl0", ""), ("dev/hl_controlD0", "")]);
        assert_eq!(auto(&old.discover(&[])), nproc(1, Device::HabanaGaudi));
        // Another vendor's accelerator (an Intel NPU) is no Gaudi.
        let npu = FakeRoot::new(&[
            ("dev/accel/accel0", ""),
            ("sys/class/accel/accel0/device/vendor", "0x8086\n"),
        ]);
        assert_eq!(auto(&npu.discover(&[])).device, Device::Cpu);
    }

    #[test]
    fn device_names_say_torchs_device_type() {
        assert_eq!(Device::AmdGpu.to_string(), "cuda (AMD GPU, ROCm)");
        assert_eq!(Device::HabanaGaudi.as_str(), "hpu (Habana Gaudi)");
    }

    #[test]
    fn cgroup_quota() {
        assert_eq!(parse_cgroup_v2_cpu_max("max 100000\n"), None);
        assert_eq!(parse_cgroup_v2_cpu_max("200000 100000\n"), Some(2));
        assert_eq!(parse_cgroup_v2_cpu_max("150000 100000"), Some(2));
        assert_eq!(parse_cgroup_v2_cpu_max("garbage"), None);
    }
}
