"""Records what a worker sees, for the prewarm test: one JSON file per rank and attempt in
OUT_DIR. Local rank 1 of the first attempt exits 3, so the group restarts once.
`colorsys_imported_before_me` tells a prewarmed worker (--prewarm=colorsys) from a fresh one."""
import ctypes
import json
import os
import sys

libc = ctypes.CDLL(None)
libc.getenv.restype = ctypes.c_char_p

out = sys.argv[1]
restart = int(os.environ["TORCHELASTIC_RESTART_COUNT"])
seen = {
    "colorsys_imported_before_me": "colorsys" in sys.modules,
    "name": __name__,
    "argv": sys.argv,
    "path0": sys.path[0],
    "env": {k: v for k, v in os.environ.items() if k.startswith(("RANK", "LOCAL_", "WORLD", "GROUP", "ROLE", "MASTER", "TORCHELASTIC", "TEST_", "ELASTICJOB_"))},
    "c_env_rank": (libc.getenv(b"RANK") or b"").decode(),
    "session_leader": os.getsid(0) == os.getpid(),
    "stdin_is_null": os.path.realpath(f"/proc/self/fd/0") == "/dev/null",
}
tmp = os.path.join(out, f".seen_{restart}_{os.environ['LOCAL_RANK']}")
with open(tmp, "w") as f:
    json.dump(seen, f)
os.replace(tmp, tmp.replace("/.seen_", "/seen_") + ".json")
print(f"worker {os.environ['RANK']} of attempt {restart} says hello", flush=True)
# The launcher starts the next round's standbys once every local worker reported progress.
with open(os.environ["ELASTICJOB_PROGRESS_FILE"], "a") as f:
    f.write('{"step": 1}\n')
if restart == 0 and os.environ["LOCAL_RANK"] == "1":
    # Fail only once rank 0 has recorded its view, or it could be stopped first, and once the
    # launcher has seen both reports (it looks every second) and its standbys have imported.
    import time
    while not os.path.exists(os.path.join(out, "seen_0_0.json")):
        time.sleep(0.01)
    time.sleep(2.5)
    sys.exit(3)
