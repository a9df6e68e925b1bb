"""A small elastic training job: DDP on a synthetic regression task.

Runs under elastic-launch (or torchrun) on CPUs with gloo, or GPUs with NCCL. It is elastic in the
torch elastic way: it checkpoints every few steps to --checkpoint-dir (when given) and resumes
from there after a restart or a change of world size, so a worker failure or a scale event
costs at most a few steps.

    elastic-launch --standalone --nproc-per-node=4 examples/train.py
"""
import argparse
import os
import time

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--checkpoint-dir", default=os.environ.get("CHECKPOINT_DIR"))
    p.add_argument("--checkpoint-every", type=int, default=10)
    p.add_argument("--step-delay", type=float, default=0.0, help="seconds to sleep per step (to watch it run)")
    return p.parse_args()


def main():
    args = parse_args()
    use_cuda = torch.cuda.is_available()
    local_rank = int(os.environ["LOCAL_RANK"])
    if use_cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl" if use_cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")

    torch.manual_seed(0)
    true_w = torch.randn(16, 1)
    model = DDP(torch.nn.Linear(16, 1).to(device), device_ids=[local_rank] if use_cuda else None)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr)

    start = 0
    ckpt = os.path.join(args.checkpoint_dir, "checkpoint.pt") if args.checkpoint_dir else None
    if ckpt and os.path.exists(ckpt):
        state = torch.load(ckpt, map_location=device)
        model.module.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        start = state["step"]
    if rank == 0:
        print(
            f"[train] world_size={world} restart={os.environ.get('TORCHELASTIC_RESTART_COUNT')} "
            f"resuming_at_step={start} backend={dist.get_backend()}",
            flush=True,
        )

    gen = torch.Generator().manual_seed(1000 + rank)
    for step in range(start, args.steps):
        x = torch.randn(args.batch_size, 16, generator=gen).to(device)
        y = x @ true_w.to(device) + 0.01 * torch.randn(args.batch_size, 1, generator=gen).to(device)
        loss = torch.nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        # The mean loss over all ranks: one more collective, and what a person wants to see.
        mean = loss.detach().clone()
        dist.all_reduce(mean)
        mean /= world
        if rank == 0 and (step % 10 == 0 or step == args.steps - 1):
            print(f"[train] step {step:4d}  loss {mean.item():.5f}", flush=True)
        if ckpt and rank == 0 and (step + 1) % args.checkpoint_every == 0:
            tmp = ckpt + ".tmp"
            torch.save({"model": model.module.state_dict(), "opt": opt.state_dict(), "step": step + 1}, tmp)
            os.replace(tmp, ckpt)
        if args.step_delay:
            time.sleep(args.step_delay)

    if rank == 0:
        print(f"[train] done: final loss {mean.item():.5f} after {args.steps} steps on {world} workers", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
