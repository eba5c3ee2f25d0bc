#!/usr/bin/env bash
# The main job on built-in defaults, from a fresh clone, on CPU:
#   install -> render a synthetic dataset -> train the tiny model a few minutes (the loss falls) -> evaluate it and
#   the shipped tiny model (clip4str-tiny, trained for about 2.5 hours on a 2-core CPU) -> read images with the shipped
#   model.
#   bash scripts/demo.sh            (DEMO_DIR=demo, DEMO_STEPS=300, DEMO_TRAIN=20000 change it)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
dir="${DEMO_DIR:-demo}"
step() { printf '\n== %s\n' "$*"; }

step "1/5 Installing (torch 2.14.1 / torchvision 0.29.1 from the local wheel store, then this package)"
python3 -m pip install -q torch==2.14.1 torchvision==0.29.1
python3 -m pip install -q -e '.[test,onnx,serve]'   # everything the test suite uses (as .ci/run)

step "2/5 Rendering the synthetic dataset into $dir/data (train/val/test LMDBs)"
if [ -f "$dir/data/meta.json" ]; then
    echo "already there: $dir/data"
else
    # --scene_tests: also the scene-like test sets (curved, perspective, occluded, ..., SynthScene/mixed)
    python3 tools/make_synthetic_dataset.py --out "$dir/data" --num_train "${DEMO_TRAIN:-20000}" --num_val 500 \
        --num_test 500 --scene_tests
fi

step "3/5 Training the tiny CLIP4STR on CPU for ${DEMO_STEPS:-300} steps (loss should fall)"
rm -rf "$dir/run"
source scripts/cpu_malloc.sh
# (no length curriculum here: over a few hundred steps it would raise the loss as the words grow longer)
python3 tools/train.py +experiment=clip4str-tiny data.root_dir="$dir/data" trainer.max_steps="${DEMO_STEPS:-300}" \
    trainer.val_check_interval=100 data.curriculum_samples=0 hydra.run.dir="$dir/run"
python3 - "$dir/run" <<'PY'
import sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
ea = EventAccumulator(sys.argv[1]); ea.Reload()
loss = [e.value for e in ea.Scalars('loss')]
print(f'training loss: first logged {loss[0]:.3f} -> last {loss[-1]:.3f} ({len(loss)} points)')
PY

step "4/5 Evaluating on the synthetic test sets (tools/test.py): this run's checkpoint, then the shipped model"
python3 tools/test.py "$dir/run/checkpoints/last.ckpt" --data_root "$dir/data" --device cpu --batch_size 64 --num_workers 2
python3 tools/test.py clip4str-tiny --data_root "$dir/data" --device cpu --batch_size 64 --num_workers 2

step "5/5 Reading a folder of images with the shipped model (tools/read.py clip4str-tiny)"
python3 - "$dir/data/test" "$dir/samples" <<'PY'
import sys
from pathlib import Path
import lmdb
out = Path(sys.argv[2]); out.mkdir(parents=True, exist_ok=True)
for name, test_set in (('clean', 'SynthFonts'), ('scene', 'SynthScene/mixed')):  # 4 images of each
    env = lmdb.open(str(Path(sys.argv[1], test_set)), readonly=True, lock=False)
    with env.begin() as txn:
        for i in range(1, 5):
            label, image = txn.get(b'label-%09d' % i).decode(), txn.get(b'image-%09d' % i)
            ext = 'png' if image.startswith(b'\x89PNG') else 'jpg'
            path = out / f'{name}{i}.{ext}'
            path.write_bytes(image)
            print(f'{path.name}: ground truth {label!r}')
PY
python3 tools/read.py clip4str-tiny "$dir/samples" --device cpu
echo "with a second look (unsure words read again from other views of their image):"
python3 tools/read.py clip4str-tiny "$dir/samples" --device cpu --second_look
