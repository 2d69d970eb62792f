#!/usr/bin/env bash
# The records that need a quiet CPU (84 px protocols whose image caches are too large to carry to the GPU
# machine), most valuable first; each writes its record when it finishes, so a stopped run loses only itself.
#   scripts/cpu_records.sh [STEP...]     (default: aug ssl kd noisy; also cal9, done)
# Run it from a clean checkout of a commit (the records keep the commit), with BENCH_DATA_DIR prepared:
#   bench data prepare caltech101 --source ../shared/data ; bench data prepare pacs --source ../shared/data
set -uo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(aug ssl kd noisy)
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
      for m in meta-augment meta-augment-fixed protonet; do  # done at 80 steps on caltech101-5w1s
        run --method "$m" --protocol caltech101-to-pacs-sketch-5w1s --train-steps 80 --episodes 300 --select final --results "$R"
      done ;;
    noisy)  # reweighting against ERM, equal steps (400 done for every protocol; the goal needs the protocol's 5,000)
      for p in caltech101-noisy-sym40 caltech101-noisy-sym60; do
        for m in erm l2rw mw-net; do run --method "$m" --protocol "$p"; done
      done ;;
    ssl)  # the self-supervised initialisation on Caltech-101, equal meta-training steps
      R=studies/ssl-init/results
      bench pretrain --ssl rotation --protocol caltech101-5w1s --train-seconds 300 --batch-size 16 --results "$R"
      init=$(ls -t "$R"/checkpoints/ssl/rotation-caltech101-5w1s-*.pt | head -1)
      for p in caltech101-5w1s caltech101-5w5s; do
        run --method protonet-ssl --protocol $p caltech101-to-pacs-sketch-${p#caltech101-} --hparam init="$init" --train-steps 60 --select final --episodes 300 --results "$R"
        run --method protonet --protocol $p caltech101-to-pacs-sketch-${p#caltech101-} --train-steps 60 --select final --episodes 300 --results "$R"
      done ;;
    kd)  # meta-kd on Caltech-101: a Conv-4 teacher of 300 steps, the student 200 steps, against no teacher
      R=studies/meta-kd/results
      run --method simpleshot --protocol caltech101-5w1s --train-steps 200 --episodes 300 --select final --hparam batch_size=64 --results "$R"
      run --method meta-kd --protocol caltech101-5w1s --train-steps 500 --episodes 300 --select final --hparam batch_size=64 teacher_backbone=conv4 teacher_steps=300 --results "$R" ;;
    *) echo "unknown step $step (cal9 aug noisy ssl kd)"; exit 2 ;;
  esac
done
echo "done; add the study arms to studies/*/study.json and commit the records"
