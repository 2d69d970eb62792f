#!/usr/bin/env bash
# One prepared GPU session: speed numbers, then the full Omniglot runs, most important first.
# Usage (from the repo root, with the Omniglot tensor cache in .gpu-data and wheels in .whl):
#   bash scripts/gpu_session.sh COMMIT [quick]
# Results are saved into $OUT/results.tar after every run, so a run cut short loses only itself.
set -u
COMMIT=${1:-unknown}
QUICK=${2:-}
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
fi
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD:/tmp/site" BENCH_DATA_DIR="$PWD/.gpu-data" \
       BENCH_RESULTS_DIR="$PWD/results" BENCH_GIT_COMMIT="$COMMIT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
python3 -c "import torch, pytorch_lightning as pl; print('torch', torch.__version__, 'lightning', pl.__version__, 'cuda', torch.cuda.is_available())"
B="python3 -m benchmark"
save() { tar cf "$OUT/results.tar" results .gpu-data/checkpoints 2>/dev/null; }
if [ -n "$QUICK" ]; then S=3; EP=20; PT="--tasks 4 --repeats 2 --eval-episodes 100 --eval-batch 50"; else S=1; EP=600; PT="--tasks 32 --repeats 5 --eval-episodes 5000 --eval-batch 500"; fi
t() { echo; echo "=== $(date +%T) $*"; }
cap() { if [ -n "$QUICK" ]; then echo 3; else echo "$1"; fi; }

t perf;            timeout 150 $B perf $PT --inner-steps 5 --out "$OUT/perf.json"
t protonet 5w1s;   timeout 110 $B evaluate --quiet --method protonet --protocol omniglot-5w1s --episodes $EP \
                     --train-steps 40000 --max-train-time "$(cap 75)" --hparam train_ways=60 --hparam train_queries=5; save
t protonet 20w1s;  timeout 110 $B evaluate --quiet --method protonet --protocol omniglot-20w1s --episodes $EP \
                     --train-steps 40000 --max-train-time "$(cap 75)" --hparam train_ways=60 --hparam train_queries=5; save
t maml 5w1s;       timeout 190 $B evaluate --quiet --method maml --protocol omniglot-5w1s --episodes $EP \
                     --train-steps 60000 --max-train-time "$(cap 150)"; save
t finetune 5w1s;   timeout 60 $B evaluate --quiet --method finetune --protocol omniglot-5w1s --episodes $EP \
                     --train-steps 40000 --max-train-time "$(cap 30)"; save
t protonet 5w5s;   timeout 60 $B evaluate --quiet --method protonet --protocol omniglot-5w5s --episodes $EP \
                     --train-steps 40000 --max-train-time "$(cap 30)" --hparam train_ways=60 --hparam train_queries=5; save
t protonet 20w5s;  timeout 60 $B evaluate --quiet --method protonet --protocol omniglot-20w5s --episodes $EP \
                     --train-steps 40000 --max-train-time "$(cap 30)" --hparam train_ways=60 --hparam train_queries=5; save
t done
