#!/usr/bin/env bash
# The STR-Adapter (CLIP frozen, a pruned ladder side network, the visual decoder) as the original's
# scripts/str_adapter.sh: 2 GPUs x 512 images, 16 epochs on Real(3.3M), lr 8e-4 for a batch of 256.
#
#   STR_DATA_ROOT=/data/str_dataset CLIP_ROOT=/data/clip bash scripts/clip4str_adapter.sh [more Hydra overrides]
#
# Other adapters: model.adapter_type=linear|attention|ladder|linear_ladder (the original's commented-out runs:
# ladder with lr 8.4e-5, batch 256 x 4 GPUs, 20 epochs). Resume: add ckpt_path=outputs/<run>/checkpoints/last.ckpt.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
: "${STR_DATA_ROOT:?set STR_DATA_ROOT to the folder holding train/ val/ test/}"
: "${CLIP_ROOT:?set CLIP_ROOT to the folder holding the CLIP weights}"
exec python "$here/../tools/train.py" +experiment=str-adapter-b16 charset=94_full dataset=real \
    model.clip_pretrained="$CLIP_ROOT/${CLIP_FILE:-ViT-B-16.pt}" data.root_dir="$STR_DATA_ROOT" \
    trainer.gpus=2 model.batch_size=512 trainer.max_epochs=16 "$@"
