#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/corpus/<target>/: a handful of real inputs per target
(store requests as torch's client sends them, real command lines, a real termination message and
/status body). Rerun after changing it: python3 fuzz/seeds/make_seeds.py"""

import json
import os
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "corpus")
MAGIC = 0x3C85F7CE


def u8(v):
    return struct.pack("<B", v)


def u32(v):
    return struct.pack("<I", v)


def i64(v):
    return struct.pack("<q", v)


def b(s):
    s = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(s)) + s


def keys(*ks):
    return struct.pack("<Q", len(ks)) + b"".join(b(k) for k in ks)


VALIDATE = u8(0) + u32(MAGIC)
SET = u8(1) + b("/worker/attempt_0/0") + b("tcp://10.0.0.1:1234")
COMPARE_SET = u8(2) + b("/rdzv/job/state") + b("") + b("round 1")
GET = u8(3) + b("/worker/attempt_0/0")
ADD = u8(4) + b("init/counter") + i64(1)
CHECK = u8(5) + keys("/worker/attempt_0/0", "missing")
WAIT = u8(6) + keys("/worker/attempt_0/0")
NUMKEYS = u8(7)
DELETE = u8(8) + b("init/counter")
APPEND = u8(9) + b("log") + b("more")
MULTI_GET = u8(10) + keys("/worker/attempt_0/0", "log")
MULTI_SET = u8(11) + i64(2) + b("a") + b("1") + b("b") + b("2")
CANCEL = u8(12)
PING = u8(13) + u32(7)
QPUSH = u8(14) + b("q") + b("item")
QPOP = u8(15) + b("q")
QLEN = u8(16) + b("q")
LIST = u8(17)
BARRIER = u8(18) + b("/worker/barrier") + i64(1)
AGENT = u8(1) + b("/elasticjob/agent") + b("fuzz-token")
RDZV_SET = u8(1) + b("/rdzv/job/closed") + b("1")

SESSION = VALIDATE + SET + GET + MULTI_SET + MULTI_GET + ADD + CHECK + PING + NUMKEYS + LIST
EVERY = (VALIDATE + SET + COMPARE_SET + GET + ADD + CHECK + NUMKEYS + DELETE + APPEND + MULTI_GET
         + MULTI_SET + CANCEL + PING + QPUSH + QLEN + QPOP + LIST + BARRIER)

SEEDS = {
    "store_codec": {
        # byte 0: how many chunk sizes follow (mod 16), then the stream.
        "session-one-shot": u8(0) + SESSION,
        "every-command-in-chunks": u8(5) + bytes([1, 4, 9, 0, 17]) + EVERY,
        "partial-multi-set": u8(2) + bytes([3, 11]) + MULTI_SET[:-3],
        "bad-magic": u8(0) + u8(0) + u32(0xDEADBEEF),
        "replies": u8(0) + i64(2) + b("k1") + b("k2"),
    },
    "store_server": {
        "session": SESSION,
        "every-command": EVERY,
        "agent": VALIDATE + AGENT + RDZV_SET + u8(3) + b("/rdzv/job/closed"),
        "stranger-writes-rdzv": VALIDATE + RDZV_SET,
        "wait-then-eof": VALIDATE + WAIT,
        "not-validated": b"GET / HTTP/1.1\r\n\r\n",
    },
    "launcher_cli": {
        "standalone": "\n\n--standalone\n--nproc-per-node=4\ntrain.py\n--epochs\n3\n",
        "multinode": "\n\n--nnodes=1:4\n--nproc_per_node\n8\n--rdzv-backend=c10d\n"
                     "--rdzv-endpoint=head:29400\n--rdzv-id=job\n--max-restarts=3\n"
                     "--rdzv-conf=join_timeout=600,last_call_timeout=30\n-m\ntrainer.main\n",
        "pet-env": "PET_NNODES=2:4\nPET_NPROC_PER_NODE=gpu\nPET_RDZV_BACKEND=c10d\n"
                   "PET_RDZV_ENDPOINT=job-worker-0.job:29400\nPET_RDZV_ID=job\n"
                   "PET_MAX_RESTARTS=3\nPET_STATUS_PORT=29401\nPET_STALL_TIMEOUT=600\n"
                   "PET_TERMINATION_MESSAGE_PATH=/dev/termination-log\n"
                   "ELASTICJOB_NODE_INDEX=0\n\ntrain.py\n",
        "static": "\n\n--nnodes=2\n--node-rank=1\n--master-addr=[::1]\n--master-port=29500\n"
                  "--tee=3\n--redirects=0:1,1:2\n--local-ranks-filter=0,1\n"
                  "--monitor-interval=0.5\n--exit-barrier-timeout=60\n--shutdown-timeout=5\n"
                  "--signals-to-handle=SIGTERM,SIGUSR1\n--no-python\n/bin/true\n",
        "abbreviations": "\n\n--nproc=2\n--te=3\n--prewarm=torch,torch.distributed\n"
                         "--duplicate-stdout-filters=loss,,x\ntrain.py\n",
        "help": "\n\n--help\n",
        # Were panics (Duration::from_secs_f64); now usage errors.
        "regression-huge-duration": "\n\n--monitor-interval=1e300\ntrain.py\n",
        "regression-env-huge-duration": "TORCH_ELASTIC_EXIT_BARRIER_TIMEOUT=1e300\n\ntrain.py\n",
    },
    "operator_termination": {
        # i32 exit code, container reason, pod reason, flags, then the message.
        "worker-failed": i64(1)[:4] + bytes([1, 0, 0]) + json.dumps({
            "kind": "elastic-launch/v1", "reason": "WorkerFailed", "host": "job-worker-1",
            "rank": 3, "localRank": 1, "exitCode": -9, "signal": "SIGKILL",
            "message": "Traceback (most recent call last):\nRuntimeError: CUDA error",
            "restartCount": 2, "maxRestarts": 3, "round": 5, "timestamp": 1700000000,
        }, separators=(",", ":")).encode(),
        "succeeded": i64(0)[:4] + bytes([5, 0, 0]) + b'{"kind":"elastic-launch/v1","reason":"Succeeded","host":"h","restartCount":2,"maxRestarts":3,"round":4,"message":"the workers succeeded","timestamp":1}',
        "rendezvous": i64(1)[:4] + bytes([1, 0, 8]) + b'{"kind":"elastic-launch/v1","reason":"RendezvousFailed","message":"invalid rendezvous configuration: x"}',
        "log-tail": i64(137)[:4] + bytes([1, 0, 0]) + b"Killed\n",
        "evicted": i64(0)[:4] + bytes([0, 1, 2]) + b"The node was low on resource: memory.",
        "oom": i64(137)[:4] + bytes([2, 0, 4]) + b"",
        # Was an overflow (negating i32::MIN to name the signal).
        "regression-exit-code-min": i64(1)[:4] + bytes([1, 0, 0]) + b'{"kind":"elastic-launch/v1","reason":"WorkerFailed","exitCode":-2147483648}',
        # Was an endless loop in RunReport::to_bounded_json (the host alone passes the limit).
        "regression-long-host": i64(1)[:4] + bytes([1, 0, 0]) + json.dumps({
            "kind": "elastic-launch/v1", "reason": "LauncherError", "host": "h" * 4100,
            "message": "x"}).encode(),
    },
    "operator_status": {
        "running": b'{"kind":"elastic-launch/v1","state":"Running","round":2,"groupRank":0,"nnodes":2,"worldSize":8,"localWorldSize":4,"restartCount":1,"maxRestarts":3,"reForms":1,"stalls":0}',
        "training": b'{"kind":"elastic-launch/v1","state":"Running","round":3,"worldSize":4,"restartCount":4,"training":{"step":120,"total":1000,"metrics":{"loss":0.31},"updated":1700000000.5,"stepsPerSecond":2.5},"stalls":1,"lastStall":{"round":2,"silentRanks":[1,3],"silentSeconds":600.0,"at":1699999000.0}}',
        "older": b'{"kind":"elastic-launch/v1","state":"Running","round":2,"worldSize":4,"restartCount":1}',
        "newer-state": b'{"kind":"elastic-launch/v1","state":"Draining"}',
        "not-a-launcher": b"<html>404</html>",
        # Was an overflow (two pods' new restarts summed) and counts wrapping to negative ones.
        "regression-huge-counts": b'{"kind":"elastic-launch/v1","state":"Running","round":18446744073709551615,"worldSize":4294967295,"restartCount":2147483647,"stalls":4294967295}',
    },
}

for target, seeds in SEEDS.items():
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    for name, data in seeds.items():
        with open(os.path.join(d, name), "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
