#!/usr/bin/env bash
# The tiny model's CPU benchmark (README, "The tiny model on CPU"): render the synthetic dataset with its scene-like
# variations, train the tiny CLIP4STR from scratch with a snapshot every 2,000 steps, then the learning curve
# (SynthWords, SynthFonts, SynthScene/mixed), the last snapshot on every test set and, with RAPIDOCR_PYTHON set to
# an interpreter that has rapidocr (README), rapidocr's recogniser on the same sets and the two side by side.
# Rendering the 640k training images takes about 20 minutes of a 2-core CPU, the 28,000-step schedule about 2 hours.
#   bash scripts/tiny_benchmark.sh [extra train.py overrides]
#   BENCH_DATA=data/scene640k BENCH_RUN=runs/tiny BENCH_STEPS=28000 BENCH_EVERY=2000 BENCH_TRAIN=640000 change it
# An interrupted benchmark continues where it stopped when started again with the same BENCH_STEPS (from the run's
# last.ckpt; the learning-rate schedule is fixed at the start, so another step count cannot resume it).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/cpu_malloc.sh
python3 -m pip install -q -e '.[bench]'  # matplotlib for learning_curve.py's plot
data="${BENCH_DATA:-data/scene640k}"
run="${BENCH_RUN:-runs/tiny}"
steps="${BENCH_STEPS:-28000}"
every="${BENCH_EVERY:-2000}"   # steps between snapshots

if [ ! -f "$data/meta.json" ]; then
    # Every scene-like variation at full strength, each on a fifth of the images (about two per image), and the
    # SynthScene test sets.
    python3 tools/make_synthetic_dataset.py --out "$data" --num_train "${BENCH_TRAIN:-640000}" --num_val 2000 \
        --num_test 2000 --scene 1 --scene_share 0.2 --scene_tests
fi
resume=()
[ -f "$run/checkpoints/last.ckpt" ] && resume=("ckpt_path='$run/checkpoints/last.ckpt'")
python3 tools/train.py +experiment=clip4str-tiny data.root_dir="$data" trainer.max_epochs=1000 \
    trainer.max_steps="$steps" trainer.val_check_interval=$(( every < 1000 ? every : 1000 )) \
    checkpoint_every_n_steps="$every" hydra.run.dir="$run" "${resume[@]}" "$@"
python3 tools/learning_curve.py "$run" --data_root "$data" --sets SynthWords SynthFonts SynthScene/mixed
python3 tools/test.py "$run/checkpoints/steps/step=$steps.ckpt" --data_root "$data" --out "$run/test.json"
if [ -n "${RAPIDOCR_PYTHON:-}" ]; then
    python3 tools/test_rapidocr.py "$RAPIDOCR_PYTHON" --data_root "$data" --out "$run/rapidocr.json"
    python3 tools/results_table.py "$run/test.json" "$run/rapidocr.json" --labels "step $steps" "rapidocr 3.10" \
        --out "$run/table.md"
fi
