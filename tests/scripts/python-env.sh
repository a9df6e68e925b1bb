#!/usr/bin/env bash
# Ensures the cached Python venv with PyTorch (CPU use, gloo) exists and prints its python path.
# The venv lives outside the clone so CI and later sessions reuse it; the marker file records
# the pinned requirement so a change of pin rebuilds it.
set -euo pipefail
cache="${XDG_CACHE_HOME:-$HOME/.cache}/elasticjob"
venv="$cache/venv"
want="torch==2.15.0 numpy"
marker="$venv/.elasticjob-requirements"
if [ -x "$venv/bin/python" ] && [ "$(cat "$marker" 2>/dev/null)" = "$want" ]; then
  echo "$venv/bin/python"
  exit 0
fi
mkdir -p "$cache"
echo "python-env: creating $venv with $want (first time only, several minutes)" >&2
rm -rf "$venv"
python3 -m venv "$venv"
# shellcheck disable=SC2086
"$venv/bin/pip" install --quiet --disable-pip-version-check $want >&2
"$venv/bin/python" -c 'import torch, torch.distributed as d; assert d.is_gloo_available()' >&2
echo "$want" > "$marker"
echo "$venv/bin/python"
