#!/usr/bin/env bash
# Set up NeuroHorizon in ./.venv on a fresh machine (CPU). Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# Pin the CPU wheel first: an unpinned `torch` would pull a multi-GB CUDA build.
# GPU users keep their own torch: the package itself only asks for torch>=2.3.
# Where the default index serves the CUDA build for this pin (plain PyPI on Linux), point
# TORCH_INDEX at the CPU wheels: TORCH_INDEX=https://download.pytorch.org/whl/cpu bash scripts/setup.sh
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  .venv/bin/pip install --quiet --disable-pip-version-check ${TORCH_INDEX:+--index-url "$TORCH_INDEX"} "torch==2.13.0"
fi
.venv/bin/pip install --quiet --disable-pip-version-check -e ".[test]"
# nlb_tools, only to test our bits/spike against NLB's own function; its pins (pandas<=1.3.4)
# predate this stack, and the function needs none of them.
.venv/bin/pip install --quiet --disable-pip-version-check --no-deps "nlb-tools==0.0.4"
echo "NeuroHorizon is set up in .venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
