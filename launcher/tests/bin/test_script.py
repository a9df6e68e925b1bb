#!/usr/bin/env python3
"""Worker for the launcher tests (our own, after torch's test/distributed/launcher/bin/test_script.py).

Requires the full torchrun worker environment (a missing variable raises KeyError), prints it,
then touches <touch-file-dir>/<RANK>, or raises RuntimeError with --fail.
"""
import argparse
import os

REQUIRED = [
    "LOCAL_RANK", "RANK", "GROUP_RANK", "ROLE_RANK", "ROLE_NAME", "LOCAL_WORLD_SIZE", "WORLD_SIZE",
    "GROUP_WORLD_SIZE", "ROLE_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RESTART_COUNT",
    "TORCHELASTIC_MAX_RESTARTS", "TORCHELASTIC_RUN_ID", "TORCHELASTIC_USE_AGENT_STORE",
    "TORCH_NCCL_ASYNC_ERROR_HANDLING", "TEST_SENTINEL_PARENT", "TORCHELASTIC_ERROR_FILE",
]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--fail", default=False, action="store_true")
    parser.add_argument("--touch-file-dir", "--touch_file_dir", type=str)
    parser.add_argument("--env-dump-dir", type=str, default=None)
    args = parser.parse_args()
    env = {k: os.environ[k] for k in REQUIRED}
    # torchrun sets OMP_NUM_THREADS=1 for more than one local worker when the parent has none.
    if int(env["LOCAL_WORLD_SIZE"]) > 1:
        env["OMP_NUM_THREADS"] = os.environ["OMP_NUM_THREADS"]
    for k, v in env.items():
        print(f"{k} = {v}")
    if args.env_dump_dir:
        with open(os.path.join(args.env_dump_dir, f"env_{env['RANK']}"), "w") as f:
            f.write("\n".join(f"{k}={v}" for k, v in sorted(env.items())))
    if args.fail:
        raise RuntimeError("raising exception since --fail flag was set")
    open(os.path.join(args.touch_file_dir, env["RANK"]), "w").close()


if __name__ == "__main__":
    main()
