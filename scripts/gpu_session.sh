#!/usr/bin/env bash
# One prepared GPU session, most valuable missing records first; results are saved after every run.
# Usage (from the repo root, with the Omniglot tensor cache in .gpu-data and wheels in .whl):
#   bash scripts/gpu_session.sh COMMIT [quick]
# The paper recipes are the defaults now (ProtoNet trains 60-way with 5 queries on Omniglot, MAML uses
# the paper's inner loop per protocol family), so no --hparam is needed; the budgets below are time caps.
# Model selection: the best of 5 checks on 100 fixed validation episodes (the protocol's val split).
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
save() { tar cf "$OUT/results.tar" results 2>/dev/null; }
if [ -n "$QUICK" ]; then EP=20; PT="--tasks 4 --repeats 2 --eval-episodes 100 --eval-batch 50"; else EP=600; PT="--tasks 32 --repeats 5 --eval-episodes 5000 --eval-batch 500"; fi
t() { echo; echo "=== $(date +%T) $*"; }
cap() { if [ -n "$QUICK" ]; then echo 3; else echo "$1"; fi; }
ev() { local secs=$1; shift; timeout $((secs + 60)) $B evaluate --quiet --episodes $EP --train-steps 60000 \
         --max-train-time "$(cap "$secs")" "$@"; save; }

# Done on an H200 at 1bdb56a (perf/h200-1bdb56a.json and the results): perf of every gradient method,
# and 60 s 5-way records for fomaml, anil, meta-sgd and meta-lstm.
# 1. Reptile on omniglot-5w1s; non-transductive scoring runs 50 inner steps per test episode, so more
#    episodes per pass than the CPU default (75 supports+query batches of 6 per episode; 100 overflowed
#    cuDNN's 32-bit indexing, 25 scored 600 episodes in 16 s)
t "reptile 5w1s";  ev 60 --method reptile --protocol omniglot-5w1s --hparam eval_batch=25
# 1b. the metric and black-box learners and SimpleShot on omniglot-5w1s (none has a GPU record yet)
for m in relation matching snail icl-transformer siamese simpleshot mann; do
  t "$m 5w1s"; ev 60 --method "$m" --protocol omniglot-5w1s
done
# 1c. domain generalisation on rotated Omniglot, 3 seeds: the pooled episodic learner (the ERM reference) and
#     MLDG's episodic variant (PACS cannot travel here, see below)
for m in protonet mldg; do
  t "$m rotated-omniglot-dg-5w1s"  # 40 s per seed; the time limit covers the three seeds and their scoring
  timeout 360 $B evaluate --quiet --episodes $EP --train-steps 60000 --max-train-time "$(cap 40)" \
    --method "$m" --protocol rotated-omniglot-dg-5w1s --seeds 0 1 2; save
done
# 1d. continual (issue 11): every method on OML's stream (10 streams x 600 classes, one image per update) after
#     120 s of pre-training or meta-training, then on class-incremental Split-Omniglot (20 alphabets) with 3 seeds
#     for the replay methods (BWT is compared over seeds)
cev() { local secs=$1; shift; timeout $((secs * 4 + 240)) $B evaluate --quiet --train-steps 60000 \
          --max-train-time "$(cap "$secs")" "$@"; save; }
for m in oml anml seq-finetune er mer la-maml joint; do
  t "$m omniglot-oml-stream"; cev 120 --method "$m" --protocol omniglot-oml-stream
done
for m in er mer la-maml seq-finetune; do
  t "$m split-omniglot-alphabets-cil"; cev 30 --method "$m" --protocol split-omniglot-alphabets-cil --seeds 0 1 2
done
# (Caltech-101 and PACS stay on the CPU: their 84px uint8 caches, about 180 and 210 MB, exceed the 64 MiB
# that travels to the device machine.)
# 2. speed (re-run only when the inner loops change): PERF=1 bash scripts/gpu_session.sh COMMIT
[ -n "${PERF:-}" ] && { t perf; timeout 120 $B perf $PT --inner-steps 5 --out "$OUT/perf.json"; }
# 3. MAML with the exact batch norm (>= 98.7%)
t maml 5w1s;       ev 240 --method maml --protocol omniglot-5w1s
# 4. the same methods on omniglot-20w1s
for m in fomaml anil meta-sgd meta-lstm; do t "$m 20w1s"; ev 90 --method "$m" --protocol omniglot-20w1s; done
t "reptile 20w1s"; ev 90 --method reptile --protocol omniglot-20w1s --hparam eval_batch=10
for m in relation matching snail icl-transformer siamese simpleshot mann; do
  t "$m 20w1s"; ev 90 --method "$m" --protocol omniglot-20w1s
done
# 5. ProtoNet omniglot-20w1s, short of 96.0% at 170 s
t protonet 20w1s;  ev 240 --method protonet --protocol omniglot-20w1s
# 6. Baseline++ on a GPU (its CPU record is a floor)
t finetune 5w1s;   ev 60 --method finetune --protocol omniglot-5w1s
t done
