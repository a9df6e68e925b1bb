"""gloo all_reduce in a loop for a while, with store traffic, so a test can disturb the store."""
import os
import sys
import time

import torch
import torch.distributed as dist

ready_dir = sys.argv[1]
dist.init_process_group("gloo", init_method="env://")
rank, world = dist.get_rank(), dist.get_world_size()
store = dist.distributed_c10d._get_default_store()
open(os.path.join(ready_dir, f"ready_{rank}"), "w").close()
# A fixed number of rounds, the same on every rank: a per-rank deadline would let one rank
# leave while another still waits in all_reduce.
for i in range(100):
    t = torch.tensor([float(rank + 1)])
    dist.all_reduce(t)
    assert t.item() == world * (world + 1) / 2
    store.set(f"k{rank}_{i}", str(i))
    assert store.get(f"k{rank}_{i}") == str(i).encode()
    time.sleep(0.02)
print(f"rank {rank}: {i + 1} rounds ok")
dist.destroy_process_group()
