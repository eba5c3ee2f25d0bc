#!/usr/bin/env bash
# The tiny model's CPU benchmark (README, "The tiny model on CPU"): render the synthetic dataset, train the tiny
# CLIP4STR from scratch with a snapshot every 2,000 steps, then test every snapshot on the held-out test sets and
# write the accuracy-vs-time table, CSV and plot. Rendering the 1M images takes 15-20 minutes of a 2-core CPU, the
# 32,000-step schedule about 2 h 3 min (the shipped model is its step-30,000 snapshot, at 115 minutes).
#   bash scripts/tiny_benchmark.sh [extra train.py overrides]
#   BENCH_DATA=data/synthetic1m BENCH_RUN=runs/tiny BENCH_STEPS=32000 BENCH_EVERY=2000 BENCH_TRAIN=1000000 change it
# An interrupted benchmark continues where it stopped when started again with the same BENCH_STEPS (from the run's
# last.ckpt; the learning-rate schedule is fixed at the start, so another step count cannot resume it).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/cpu_malloc.sh
python3 -m pip install -q -e '.[bench]'  # matplotlib for learning_curve.py's plot
data="${BENCH_DATA:-data/synthetic1m}"
run="${BENCH_RUN:-runs/tiny}"
steps="${BENCH_STEPS:-32000}"
every="${BENCH_EVERY:-2000}"   # steps between snapshots

if [ ! -f "$data/meta.json" ]; then
    python3 tools/make_synthetic_dataset.py --out "$data" --num_train "${BENCH_TRAIN:-1000000}" --num_val 2000 \
        --num_test 2000
fi
resume=()
[ -f "$run/checkpoints/last.ckpt" ] && resume=("ckpt_path='$run/checkpoints/last.ckpt'")
python3 tools/train.py +experiment=clip4str-tiny data.root_dir="$data" trainer.max_epochs=1000 \
    trainer.max_steps="$steps" trainer.val_check_interval=$(( every < 1000 ? every : 1000 )) \
    checkpoint_every_n_steps="$every" hydra.run.dir="$run" "${resume[@]}" "$@"
python3 tools/learning_curve.py "$run" --data_root "$data"
