#!/usr/bin/env bash
# The fine-tuning benchmark (README, "Fine-tuning"): the shipped clip4str-tiny (lower-case Latin and digits) taught
# upper case and Greek on rendered words for a fixed number of steps (about 20 minutes of a 2-core CPU), against the
# same tiny config trained from scratch on the same data for the same steps; then both, and the shipped model, on
# held-out Greek words (the 125-character charset, case-sensitive) and on the old Latin test sets (the 36-character
# benchmark protocol: what fine-tuning forgets). Prints the table and writes learning curves.
#   bash scripts/finetune_benchmark.sh
#   BENCH_OUT=runs/finetune_greek BENCH_STEPS=4800 BENCH_EVERY=800 BENCH_TRAIN=200000 change it
# Started again, it reuses the rendered data and finished runs, and resumes an interrupted run from its last.ckpt.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/cpu_malloc.sh
python3 -m pip install -q -e '.[bench]'  # matplotlib for learning_curve.py's plot
out="${BENCH_OUT:-runs/finetune_greek}"
steps="${BENCH_STEPS:-4800}"
every="${BENCH_EVERY:-800}"
charset='model.charset_train=${charset:125_latin-greek}'
el=strhub/data/wordlist_el.txt

render() {  # render DIR [make_synthetic_dataset.py options]
    [ -f "$1/meta.json" ] || python3 tools/make_synthetic_dataset.py --out "$@"
}
# Training data: English and Greek words equally often, in three cases; random strings of the whole charset.
render "$out/data" --charset 125_latin-greek --words strhub/data/wordlist.txt "$el" \
    --num_train "${BENCH_TRAIN:-200000}" --num_val 2000 --num_test 0
# Held-out Greek words (SynthWords: training fonts, SynthFonts: held-out font families) and the Latin test sets of
# the shipped model (its rendering seed and options).
render "$out/greek_test" --charset 125_latin-greek --words "$el" --num_train 0 --num_val 0 --num_test 2000
render "$out/latin_test" --num_train 0 --num_val 0 --num_test 2000

train() {  # train RUN_DIR COMMAND...: runs it unless finished, resuming an interrupted run
    local run="$1"
    shift
    [ -f "$run/checkpoints/steps/step=$steps.ckpt" ] && return
    local resume=()
    [ -f "$run/checkpoints/last.ckpt" ] && resume=("ckpt_path='$run/checkpoints/last.ckpt'")
    "$@" trainer.max_steps="$steps" trainer.max_epochs=1000 trainer.val_check_interval=1000 \
        ++trainer.limit_val_batches=8 checkpoint_every_n_steps="$every" hydra.run.dir="$run" "${resume[@]}"
}
# Fine-tuned: configs/experiment/finetune.yaml as it is.
train "$out/finetuned" bash scripts/finetune.sh clip4str-tiny "$out/data" "$charset"
# From scratch: the tiny model's own recipe (configs/experiment/clip4str-tiny.yaml), its short-to-long curriculum
# over the first quarter of the samples, as in its 2-hour recipe.
train "$out/scratch" python3 tools/train.py +experiment=clip4str-tiny data.root_dir="$out/data" "$charset" \
    'model.charset_test=${model.charset_train}' data.curriculum_samples=$(( steps * 64 / 4 ))

results="$out/results"
mkdir -p "$results"
for name in shipped finetuned scratch; do
    ckpt="$out/$name/checkpoints/steps/step=$steps.ckpt"
    [ "$name" = shipped ] && ckpt=clip4str-tiny
    python3 tools/test.py "$ckpt" --data_root "$out/greek_test" --charset_test 125_latin-greek \
        --out "$results/$name.greek.json"
    python3 tools/test.py "$ckpt" --data_root "$out/latin_test" --out "$results/$name.latin.json"
done
python3 tools/learning_curve.py "$out/finetuned" "$out/scratch" --data_root "$out/greek_test" \
    --out_prefix "$results/greek_curve"
python3 tools/results_table.py "$results"/{shipped,finetuned,scratch}.{greek,latin}.json --out "$results/table.md"
