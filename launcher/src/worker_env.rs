//! The environment of each worker, exactly as torchrun's agent builds it (`docs/pod-contract.md`).
//! A pure function: the caller passes the launcher's environment and gets the overlay.

use std::collections::BTreeMap;

/// Where one worker sits in the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerRanks {
    pub local_rank: u32,
    pub global_rank: u32,
    pub role_rank: u32,
    pub group_rank: u32,
    pub group_world_size: u32,
    pub world_size: u32,
    pub role_world_size: u32,
    pub local_world_size: u32,
}

/// What every worker of this round shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoundEnv {
    pub role: String,
    pub run_id: String,
    pub restart_count: u32,
    pub max_restarts: u32,
    pub master_addr: String,
    pub master_port: u16,
    pub use_agent_store: bool,
    pub virtual_local_rank: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "local_rank {local_rank} exceeds available GPUs in CUDA_VISIBLE_DEVICES={visible}: --virtual-local-rank gives each worker one entry of it; start fewer workers or expose more GPUs"
)]
pub struct VirtualLocalRankError {
    pub local_rank: u32,
    pub visible: String,
}

/// The variables set on top of the inherited environment. `parent` is the launcher's own
/// environment (after it set `OMP_NUM_THREADS`); `error_file` is `""` for `--log-dir /dev/null`.
pub fn worker_env(
    ranks: &WorkerRanks,
    round: &RoundEnv,
    error_file: &str,
    parent: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, VirtualLocalRankError> {
    let mut env = BTreeMap::new();
    let mut set = |k: &str, v: String| {
        env.insert(k.to_string(), v);
    };
    let local_rank = if round.virtual_local_rank {
        0
    } else {
        ranks.local_rank
    };
    set("LOCAL_RANK", local_rank.to_string());
    set("RANK", ranks.global_rank.to_string());
    set("GROUP_RANK", ranks.group_rank.to_string());
    set("ROLE_RANK", ranks.role_rank.to_string());
    set("ROLE_NAME", round.role.clone());
    set("LOCAL_WORLD_SIZE", ranks.local_world_size.to_string());
    set("WORLD_SIZE", ranks.world_size.to_string());
    set("GROUP_WORLD_SIZE", ranks.group_world_size.to_string());
    set("ROLE_WORLD_SIZE", ranks.role_world_size.to_string());
    set("MASTER_ADDR", round.master_addr.clone());
    set("MASTER_PORT", round.master_port.to_string());
    set(
        "TORCHELASTIC_RESTART_COUNT",
        round.restart_count.to_string(),
    );
    set("TORCHELASTIC_MAX_RESTARTS", round.max_restarts.to_string());
    set("TORCHELASTIC_RUN_ID", round.run_id.clone());
    set(
        "TORCHELASTIC_USE_AGENT_STORE",
        if round.use_agent_store {
            "True"
        } else {
            "False"
        }
        .into(),
    );
    set(
        "TORCH_NCCL_ASYNC_ERROR_HANDLING",
        parent
            .get("TORCH_NCCL_ASYNC_ERROR_HANDLING")
            .cloned()
            .unwrap_or_else(|| "1".into()),
    );
    set("TORCHELASTIC_ERROR_FILE", error_file.to_string());
    if round.virtual_local_rank {
        set(
            "CUDA_VISIBLE_DEVICES",
            virtual_device(ranks.local_rank, parent.get("CUDA_VISIBLE_DEVICES"))?,
        );
    }
    Ok(env)
}

/// With `--virtual-local-rank` every worker sees only its own GPU, as `LOCAL_RANK=0`.
fn virtual_device(
    local_rank: u32,
    visible: Option<&String>,
) -> Result<String, VirtualLocalRankError> {
    let Some(visible) = visible else {
        return Ok(local_rank.to_string());
    };
    visible
        .split(',')
        .nth(local_rank as usize)
        .map(|d| d.trim().to_string())
        .ok_or_else(|| VirtualLocalRankError {
            local_rank,
            visible: visible.clone(),
        })
}

/// torchrun's rule: with more than one worker and no `OMP_NUM_THREADS`, workers get 1.
pub fn default_omp_num_threads(
    nproc_per_node: u32,
    parent: &BTreeMap<String, String>,
) -> Option<&'static str> {
    (nproc_per_node > 1 && !parent.contains_key("OMP_NUM_THREADS")).then_some("1")
}

pub const OMP_WARNING: &str = "\n*****************************************\nSetting OMP_NUM_THREADS environment variable for each process to be 1 in default, to avoid your system being overloaded, please further tune the variable for optimal performance in your application as needed. \n*****************************************";

#[cfg(test)]
mod tests {
    use super::*;

    fn ranks(local_rank: u32) -> WorkerRanks {
        WorkerRanks {
            local_rank,
            global_rank: 4 + local_rank,
            role_rank: 4 + local_rank,
            group_rank: 1,
            group_world_size: 2,
            world_size: 8,
            role_world_size: 8,
            local_world_size: 4,
        }
    }

    fn round() -> RoundEnv {
        RoundEnv {
            role: "trainer".into(),
            run_id: "job-1".into(),
            restart_count: 2,
            max_restarts: 3,
            master_addr: "node-0".into(),
            master_port: 29400,
            use_agent_store: true,
            virtual_local_rank: false,
        }
    }

    #[test]
    fn sets_torchruns_variables() {
        let env = worker_env(&ranks(1), &round(), "/logs/1/error.json", &BTreeMap::new()).unwrap();
        let get = |k: &str| env.get(k).map(String::as_str);
        assert_eq!(get("LOCAL_RANK"), Some("1"));
        assert_eq!(get("RANK"), Some("5"));
        assert_eq!(get("GROUP_RANK"), Some("1"));
        assert_eq!(get("ROLE_NAME"), Some("trainer"));
        assert_eq!(get("WORLD_SIZE"), Some("8"));
        assert_eq!(get("GROUP_WORLD_SIZE"), Some("2"));
        assert_eq!(get("LOCAL_WORLD_SIZE"), Some("4"));
        assert_eq!(get("MASTER_PORT"), Some("29400"));
        assert_eq!(get("TORCHELASTIC_RESTART_COUNT"), Some("2"));
        assert_eq!(get("TORCHELASTIC_MAX_RESTARTS"), Some("3"));
        assert_eq!(get("TORCHELASTIC_USE_AGENT_STORE"), Some("True"));
        assert_eq!(get("TORCH_NCCL_ASYNC_ERROR_HANDLING"), Some("1"));
        assert_eq!(get("TORCHELASTIC_ERROR_FILE"), Some("/logs/1/error.json"));
        assert_eq!(get("CUDA_VISIBLE_DEVICES"), None);
    }

    #[test]
    fn keeps_parent_nccl_setting() {
        let parent = BTreeMap::from([(
            "TORCH_NCCL_ASYNC_ERROR_HANDLING".to_string(),
            "0".to_string(),
        )]);
        let env = worker_env(&ranks(0), &round(), "", &parent).unwrap();
        assert_eq!(env["TORCH_NCCL_ASYNC_ERROR_HANDLING"], "0");
    }

    #[test]
    fn virtual_local_rank_narrows_devices() {
        let r = RoundEnv {
            virtual_local_rank: true,
            ..round()
        };
        let parent = BTreeMap::from([("CUDA_VISIBLE_DEVICES".to_string(), "4, 5,6".to_string())]);
        let env = worker_env(&ranks(1), &r, "", &parent).unwrap();
        assert_eq!(
            (
                env["LOCAL_RANK"].as_str(),
                env["CUDA_VISIBLE_DEVICES"].as_str()
            ),
            ("0", "5")
        );
        let env = worker_env(&ranks(2), &r, "", &BTreeMap::new()).unwrap();
        assert_eq!(env["CUDA_VISIBLE_DEVICES"], "2");
        let err = worker_env(&ranks(3), &r, "", &parent).unwrap_err();
        assert!(
            err.to_string()
                .contains("local_rank 3 exceeds available GPUs in CUDA_VISIBLE_DEVICES=4, 5,6")
        );
    }

    #[test]
    fn omp_rule() {
        assert_eq!(default_omp_num_threads(4, &BTreeMap::new()), Some("1"));
        assert_eq!(default_omp_num_threads(1, &BTreeMap::new()), None);
        let parent = BTreeMap::from([("OMP_NUM_THREADS".to_string(), "8".to_string())]);
        assert_eq!(default_omp_num_threads(4, &parent), None);
    }
}
