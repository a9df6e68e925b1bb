#!/usr/bin/env bash
# Real-GPU checks of elastic-launch, for a machine with NVIDIA GPUs and a CUDA torch:
# GPU discovery without torch, --nproc-per-node=auto/gpu against torch's own count and
# torchrun's, and a real NCCL job (examples/train.py). Prints PASS/FAIL per check.
#   B=<elastic-launch binary> PY=<python with CUDA torch> tests/gpu/device_check.sh
set -u
B=${B:-elastic-launch}
PY=${PY:-python3}
fails=0
check() { if [ "$2" = "$3" ]; then echo "PASS $1 ($2)"; else echo "FAIL $1: got '$2', want '$3'"; fails=$((fails + 1)); fi; }

nvidia-smi -L || true
torch_count=$("$PY" -c 'import torch; print(torch.cuda.device_count())')
echo "torch sees $torch_count GPU(s)"

check "auto = torch's GPU count" "$(env -u CUDA_VISIBLE_DEVICES LOGLEVEL=error "$B" --nproc-per-node=auto --no-python /bin/sh -c 'echo "worker"' | grep -c '^worker')" "$torch_count"
check "gpu = torch's GPU count" "$(env -u CUDA_VISIBLE_DEVICES LOGLEVEL=error "$B" --nproc-per-node=gpu --no-python /bin/sh -c 'echo "worker"' | grep -c '^worker')" "$torch_count"
check "torchrun auto agrees" "$(env -u CUDA_VISIBLE_DEVICES "$PY" -m torch.distributed.run --nproc-per-node=auto --no-python /bin/sh -c 'echo "worker"' 2>/dev/null | grep -c '^worker')" "$torch_count"
check "CUDA_VISIBLE_DEVICES narrows auto" "$(CUDA_VISIBLE_DEVICES=0 LOGLEVEL=error "$B" --nproc-per-node=auto --no-python /bin/sh -c 'echo "worker"' | grep -c '^worker')" "1"
check "virtual local rank narrows devices" "$(CUDA_VISIBLE_DEVICES=0 LOGLEVEL=error "$B" --nproc-per-node=1 --virtual-local-rank --no-python "$PY" -c 'import os, torch; print("dev", os.environ["CUDA_VISIBLE_DEVICES"], torch.cuda.device_count())' 2>/dev/null | grep '^dev')" "dev 0 1"

echo "== NCCL training job (examples/train.py on every GPU)"
out=$(PYTHON_EXEC="$PY" "$B" --standalone --nproc-per-node=gpu examples/train.py --steps 40 2>&1)
echo "$out" | grep -E '\[train\]|ERROR|Error' | tail -8
check "train.py ran on nccl" "$(echo "$out" | grep -c 'backend=nccl')" "1"
check "train.py finished" "$(echo "$out" | grep -c '\[train\] done')" "1"
echo "fails=$fails"
exit "$fails"
