"""Torch worker of the restart benchmark (bench/rendezvous.py): time to training again.

usage: rdzv_torch_worker.py FILE FAIL_GROUP_RANK [SETTLE_S]

Appends `start`, `imported` and `reduced` lines (`<what> <unix time> <restart count> <group
rank> <rank> <pid>`) to FILE: before any import, after `import torch`, and after
`init_process_group("gloo")` and one `all_reduce`. While FILE holds no `death` line (the first
round), the worker of GROUP_RANK=FAIL_GROUP_RANK waits until every rank has reduced, sleeps
SETTLE_S (default 1) so the agents are settled in monitoring (and, with --prewarm, their
standbys for the next round, started once every local worker reported a first step to
$ELASTICJOB_PROGRESS_FILE, have imported torch, as in any job that trains for more than a few
seconds), appends `death` and exits 1; the others wait to be
stopped. After the death every worker exits 0 once it has reduced.
"""
import time

started = time.time()
import os  # noqa: E402
import sys  # noqa: E402

path, fail_group_rank = sys.argv[1], int(sys.argv[2])
settle = float(sys.argv[3]) if len(sys.argv) > 3 else 1.0
env = os.environ
ids = f"{env.get('TORCHELASTIC_RESTART_COUNT', '0')} {env.get('GROUP_RANK', '0')} {env.get('RANK', '0')} {os.getpid()}"


def stamp(what, t):
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, f"{what} {t:.6f} {ids}\n".encode())
    os.close(fd)


def read():
    with open(path) as f:
        return f.read()


stamp("start", started)
first_round = "\ndeath " not in read()
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

stamp("imported", time.time())
dist.init_process_group("gloo")
x = torch.ones(1)
dist.all_reduce(x)
assert x.item() == dist.get_world_size(), x
stamp("reduced", time.time())
if "ELASTICJOB_PROGRESS_FILE" in env:  # a first step: elastic-launch --prewarm starts its standbys
    with open(env["ELASTICJOB_PROGRESS_FILE"], "a") as f:
        f.write('{"step": 1}\n')
if not first_round:
    dist.destroy_process_group()
    sys.exit(0)
if int(env["GROUP_RANK"]) != fail_group_rank or env["LOCAL_RANK"] != "0":
    time.sleep(3600)  # not the worker that dies: run until the agent stops it for the restart
    sys.exit(0)
while read().count("reduced ") < dist.get_world_size():
    time.sleep(0.001)
time.sleep(settle)
stamp("death", time.time())
os._exit(1)
