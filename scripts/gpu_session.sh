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
save() { tar cf "$OUT/results.tar" results studies 2>/dev/null; }
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
for m in oml anml seq-finetune er la-maml joint; do
  t "$m omniglot-oml-stream"; cev 120 --method "$m" --protocol omniglot-oml-stream
done
# MER takes 110 single-image steps per image: 3 streams of 100 classes
t "mer omniglot-oml-stream"; cev 60 --method mer --protocol omniglot-oml-stream --max-classes 100 --episodes 3
for m in er mer la-maml seq-finetune; do
  t "$m split-omniglot-alphabets-cil"; cev 30 --method "$m" --protocol split-omniglot-alphabets-cil --seeds 0 1 2
done
# 1e. issue 12, a study (ablation arms live in studies/, not on the leaderboard): 120 s of rotation pre-training
#     on omniglot-5w1s's training images, then protonet-ssl and protonet at 120 s each and protonet at 240 s
#     (equal compute); the arms go into studies/ssl-init/study.json afterwards
S=studies/ssl-init/results-h100
t "ssl pretrain"; timeout 400 $B pretrain --ssl rotation --protocol omniglot-5w1s --train-seconds "$(cap 120)" \
  --results $S --quiet; save
init=$(ls -t $S/checkpoints/ssl/rotation-omniglot-5w1s-*.pt 2>/dev/null | head -1)
[ -n "$init" ] && { t protonet-ssl; ev 120 --method protonet-ssl --protocol omniglot-5w1s --hparam init="$init" --results $S; }
t "protonet same budget"; ev 120 --method protonet --protocol omniglot-5w1s --results $S
t "protonet equal compute"; ev 240 --method protonet --protocol omniglot-5w1s --results $S-compute
# 1f. issue 12, a study: meta-kd with the recipe's ResNet-12 teacher (the CPU study used a Conv-4 teacher) on
#     omniglot-5w1s, 1000 teacher + 1000 student steps at batch 256: the learned temperature, fixed 1, 4 and 10, a
#     weaker teacher (200 steps) at learned and fixed 4, and SimpleShot's 1000 steps with no teacher; the time cap
#     is a guard (a run stopped inside its teacher phase fails and writes nothing)
K=studies/meta-kd/results-gpu
kd() { ev 400 --method meta-kd --protocol omniglot-5w1s --results $K "$@"; }
t "meta-kd learned"; kd --train-steps 2000 --hparam teacher_steps=1000
for T in 4 1 10; do t "meta-kd T=$T"; kd --train-steps 2000 --hparam teacher_steps=1000 --hparam temperature=$T; done
t "meta-kd weak teacher"; kd --train-steps 1200 --hparam teacher_steps=200
t "meta-kd weak teacher T=4"; kd --train-steps 1200 --hparam teacher_steps=200 --hparam temperature=4
t "simpleshot, the student alone"; ev 200 --method simpleshot --protocol omniglot-5w1s --train-steps 1000 --results $K
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
# 7. sweeps (issue 14): ProtoNet on the four Omniglot protocols, 2 configurations each from its search space,
#    8 trials of 20 s; packed 4 to a GPU (--gpus-per-trial 0.25) against the same trials one after another
#    (--gpus-per-trial 1), on this machine in this session; the README reports trials/hour of both. Ray's
#    wheel is too large for .whl, so this needs ray on the device machine.
if python3 -c "import ray" 2>/dev/null; then
  SW="--method protonet --protocol omniglot-5w1s omniglot-5w5s omniglot-20w1s omniglot-20w5s --seeds 0 --trials 2
      --train-steps 60000 --max-train-time $(cap 20) --episodes $EP --cpus-per-trial 2 --quiet --results $OUT/sweep-results"
  for mode in packed:0.25 serial:1; do
    t "sweep ${mode%%:*}"; s0=$SECONDS
    timeout 900 $B sweep $SW --gpus-per-trial "${mode##*:}" --sweeps "$OUT/sweeps" --name "${mode%%:*}" 2>&1 | tail -14
    echo "sweep ${mode%%:*}: 8 trials in $((SECONDS - s0)) s = $((8 * 3600 / (SECONDS - s0 + 1))) trials/hour"
  done
else
  echo "ray is not installed on this machine: pip install 'ray>=2.9' (the sweep step is skipped)"
fi
# 8. architecture search (issue 13): one search per strategy on Omniglot (ProtoNet objective, second-order DARTS,
#    the space's default width of 16 while searching), 10 minutes each, every found cell widened to Conv-4's
#    parameter count; then ProtoNet on omniglot-20w1s with each found cell, the random cell of the same space
#    (random-omniglot-v1, committed) and Conv-4, 120 s each, so the page pairs every cell with Conv-4 on the same
#    episodes. The step counts set the cosine schedules' length (a guess at 10 minutes of H100; the time cap stops
#    whichever comes first). The genotype files come back in $OUT/genotypes (commit them to benchmark/methods/genotypes/).
t "nas search darts";  timeout 900 $B search --strategy darts --dataset omniglot --steps 3000 \
  --max-time "$(cap 600)" --hparam meta_batch=1 --name darts-omniglot-v2 --quiet  # one 20-way episode a split: memory
t "nas search rl";     timeout 900 $B search --strategy rl --dataset omniglot --steps 8000 \
  --max-time "$(cap 600)" --name rl-omniglot-v2 --quiet
mkdir -p "$OUT/genotypes"; cp benchmark/methods/genotypes/*.json "$OUT/genotypes/"
for bb in darts-omniglot-v2 rl-omniglot-v2 random-omniglot-v1 conv4; do
  [ "$bb" = conv4 ] || [ -f "benchmark/methods/genotypes/$bb.json" ] || { echo "no genotype $bb: skipped"; continue; }
  t "protonet 20w1s on $bb"; ev 120 --method protonet --protocol omniglot-20w1s --hparam backbone="$bb"
done
t "nas done"
t done
