"""Hosts torch's own TCPStore server (libuv backend, the default) for the store benchmark:
prints the port on stdout, then serves until stdin closes."""

import sys
from datetime import timedelta

import torch.distributed as dist

store = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False, timeout=timedelta(seconds=60))
print(store.port, flush=True)
sys.stdin.read()
