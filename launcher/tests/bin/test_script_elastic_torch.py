"""Real torch workers across elastic rounds: all_reduce must sum to the round's world size.

Every worker reports one step of progress after the first all_reduce. In round 0 the global rank
given by --kill-rank then SIGKILLs itself (after --kill-after seconds), so the job has to restart;
in later rounds every worker reports success to --out-dir.
"""
import argparse
import os
import signal
import time

import torch
import torch.distributed as dist

p = argparse.ArgumentParser()
p.add_argument("--kill-rank", type=int, required=True)
p.add_argument("--out-dir", required=True)
p.add_argument("--kill-after", type=float, default=0.0)
args = p.parse_args()
restart = int(os.environ["TORCHELASTIC_RESTART_COUNT"])
dist.init_process_group("gloo", init_method="env://")
rank, world = dist.get_rank(), dist.get_world_size()
t = torch.tensor([float(rank + 1)])
dist.all_reduce(t)
assert t.item() == world * (world + 1) / 2, f"all_reduce gave {t.item()} with world {world}"
if "ELASTICJOB_PROGRESS_FILE" in os.environ:  # training: the launcher starts its standbys
    with open(os.environ["ELASTICJOB_PROGRESS_FILE"], "a") as f:
        f.write('{"step": 1}\n')
if restart == 0 and rank == args.kill_rank:
    time.sleep(args.kill_after)
    os.kill(os.getpid(), signal.SIGKILL)
if restart == 0:
    dist.barrier()  # the killed rank never arrives; the agents restart everyone
with open(os.path.join(args.out_dir, f"ok_{restart}_{rank}_of_{world}"), "w") as f:
    f.write(str(t.item()))
dist.destroy_process_group()
