#!/usr/bin/env bash
# The GPU checks of issue 15 (bench_backbones.py --device cuda, issue 13, runs the same way), as run on a lent GPU machine (the `device` tool): that
# machine has python3 with torch and torchvision but no registry, so Optuna, torchjd and their
# needs travel as wheels in .whl/: here, `.venv/bin/pip download --no-deps -d .whl optuna==5.0.0
# alembic sqlalchemy greenlet Mako colorlog torchjd==0.18.0 qpsolvers==4.13.0 quadprog==0.1.14`
# (CPython 3.11 manylinux wheels), then carry [".whl", "benchmarks/.peers/torchjd"]; add
# "benchmarks/.peers/libmtl_git" for LibMTL's column (skipped with a line where LibMTL's own
# imports, such as scipy or cvxpy, are missing).
# Usage there: bash benchmarks/gpu_checks.sh OUTDIR
set -uo pipefail
out=${1:-/tmp/gpu_out}
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD:$PWD/tests PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 -c "import torch, torchvision, mtlsearch; print('torch', torch.__version__, 'torchvision', torchvision.__version__, torch.cuda.get_device_name())" | tee -a "$out/gpu.txt"
step() { echo "== $1"; shift; timeout "$@"; echo "== rc $?"; }
step "CUDA tests" 150 python3 -m pytest -q -p no:cacheprovider -o addopts="" tests/test_cuda.py tests/test_aggregators_minnorm.py -k cuda 2>&1 | tee "$out/tests.log"
step "step at T = 3, 8, 16 vs torchjd" 360 python3 benchmarks/bench_task_count.py --device cuda --rounds 6 --json "$out/task_count.json" 2>&1 | tee "$out/task_count.log"
