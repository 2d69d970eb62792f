#!/usr/bin/env bash
# The records that need a quiet CPU (84 px protocols whose image caches are too large to carry to the GPU
# machine), most valuable first; each writes its record when it finishes, so a stopped run loses only itself.
#   scripts/cpu_records.sh [STEP...]     (default: every step; steps: cal9 aug noisy ssl)
# Run it from a clean checkout of a commit (the records keep the commit), with BENCH_DATA_DIR prepared:
#   bench data prepare caltech101 --source ../shared/data ; bench data prepare pacs --source ../shared/data
set -uo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(cal9 aug noisy ssl)
CAL="caltech101-5w1s caltech101-to-pacs-sketch-5w1s"
run() { echo "== $* ($(date -u +%T))"; bench evaluate --device cpu --quiet "$@" || echo "!! failed: $*"; }

for step in "${steps[@]}"; do
  case "$step" in
    cal9)  # issue 9: the cross-domain tab compares more than two methods (300 s of training each)
      run --method simpleshot --protocol $CAL --max-train-time 300 --hparam batch_size=64
      run --method matching --protocol $CAL --max-train-time 300 --hparam fce=false  # FCE at 84 px: 110 s a step
      run --method relation --protocol $CAL --max-train-time 300 ;;
    aug)  # meta-augment against its fixed policy and no augmentation, equal steps (a study: ablation arms)
      R=studies/meta-augment/results
      for m in meta-augment meta-augment-fixed protonet; do
        run --method "$m" --protocol $CAL --train-steps 150 --results "$R"
      done ;;
    noisy)  # reweighting against ERM at 40% and 60% symmetric noise, equal steps
      for p in caltech101-noisy-sym40 caltech101-noisy-sym60; do
        for m in erm l2rw mw-net; do run --method "$m" --protocol "$p" --train-steps 400; done
      done ;;
    ssl)  # the self-supervised initialisation on Caltech-101 (one checkpoint serves the PACS protocols too)
      R=studies/ssl-init/results
      bench pretrain --ssl rotation --protocol caltech101-5w1s --train-seconds 300 --batch-size 16 --results "$R"
      init=$(ls -t "$R"/checkpoints/ssl/rotation-caltech101-5w1s-*.pt | head -1)
      run --method protonet-ssl --protocol $CAL --hparam init="$init" --max-train-time 300 --results "$R"
      run --method protonet --protocol $CAL --max-train-time 300 --results "$R" ;;
    *) echo "unknown step $step (cal9 aug noisy ssl)"; exit 2 ;;
  esac
done
echo "done; add the study arms to studies/*/study.json and commit the records"
