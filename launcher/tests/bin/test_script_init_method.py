"""init_process_group("gloo") with the given init method, then an all_reduce that must sum ranks."""
import argparse
import os

import torch
import torch.distributed as dist

parser = argparse.ArgumentParser()
parser.add_argument("--init-method", "--init_method", required=True)
args = parser.parse_args()
rank = int(os.environ["RANK"])
world_size = int(os.environ["WORLD_SIZE"])
dist.init_process_group("gloo", init_method=args.init_method, rank=rank, world_size=world_size)
t = torch.tensor([float(rank + 1)])
dist.all_reduce(t)
expected = world_size * (world_size + 1) / 2
assert t.item() == expected, f"all_reduce gave {t.item()}, expected {expected}"
print(f"rank {rank}: all_reduce ok ({t.item()})")
dist.destroy_process_group()
