#!/usr/bin/env bash
# CLIP4STR-L (ViT-L/14): 4 GPUs x 48 images x 5 accumulation (~1024 per step), 10 epochs on Real(3.3M).
#
#   STR_DATA_ROOT=/data/str_dataset CLIP_ROOT=/data/clip bash scripts/clip4str_l.sh [more Hydra overrides]
#
# Keep trainer.gpus x trainer.accumulate_grad_batches x model.batch_size ~ 1024, e.g. 8 GPUs:
# trainer.gpus=8 trainer.accumulate_grad_batches=2 model.batch_size=64. RBU (as the released L model):
# dataset=rbu STR_RBU_ROOT=... CLIP_FILE=OpenCLIP-ViT-L-14-DataComp-XL-s13B-b90K.bin trainer.max_epochs=5
# trainer.accumulate_grad_batches=4 model.batch_size=64.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
: "${STR_DATA_ROOT:?set STR_DATA_ROOT to the folder holding train/ val/ test/}"
: "${CLIP_ROOT:?set CLIP_ROOT to the folder holding the CLIP weights}"
exec python "$here/../tools/train.py" +experiment=clip4str-l14 dataset=real \
    model.clip_pretrained="$CLIP_ROOT/${CLIP_FILE:-ViT-L-14.pt}" data.root_dir="$STR_DATA_ROOT" \
    trainer.gpus=4 trainer.accumulate_grad_batches=5 model.batch_size=48 trainer.max_epochs=10 model.lr=8.4e-5 "$@"
