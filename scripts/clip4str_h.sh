#!/usr/bin/env bash
# CLIP4STR-H (OpenCLIP ViT-H/14, run with 20 heads and QuickGELU as the original): 4 GPUs x 32 images x 8
# accumulation = 1024 per step, 4 epochs on RBU (6.5M).
#
#   STR_RBU_ROOT=/data/str_dataset_ub CLIP_ROOT=/data/clip bash scripts/clip4str_h.sh [more Hydra overrides]
#
# Keep trainer.gpus x trainer.accumulate_grad_batches x model.batch_size = 1024, e.g. 8 GPUs:
# trainer.gpus=8 trainer.accumulate_grad_batches=4. LAION-2B weights instead of DFN-5B:
# CLIP_FILE=OpenCLIP-ViT-H-14-laion2B-s32B-b79K.bin.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
: "${STR_RBU_ROOT:?set STR_RBU_ROOT to the RBU folder holding train/ val/ test/}"
: "${CLIP_ROOT:?set CLIP_ROOT to the folder holding the CLIP weights}"
exec python "$here/../tools/train.py" +experiment=clip4str-h14 dataset=rbu \
    model.clip_pretrained="$CLIP_ROOT/${CLIP_FILE:-appleDFN5B-CLIP-ViT-H-14.bin}" \
    trainer.gpus=4 trainer.accumulate_grad_batches=8 model.batch_size=32 trainer.max_epochs=4 model.lr=8.4e-5 "$@"
