#!/usr/bin/env bash
# CLIP4STR-B (ViT-B/16) as the paper: 8 GPUs x 128 images, 16 epochs on Real(3.3M).
#
#   STR_DATA_ROOT=/data/str_dataset CLIP_ROOT=/data/clip bash scripts/clip4str_b.sh [more Hydra overrides]
#
# Keep trainer.gpus x trainer.accumulate_grad_batches x model.batch_size = 1024 (the learning rate scales with
# it); with fewer GPUs, e.g. 4 GPUs: trainer.gpus=4 model.batch_size=256, or 2 GPUs:
# trainer.gpus=2 trainer.accumulate_grad_batches=2 model.batch_size=256. Lightning handles the rest.
# Other CLIP weights: CLIP_FILE=OpenCLIP-ViT-B-16-DataComp-XL-s13B-b90K.bin (with dataset=rbu: the RBU model).
# Resume: add ckpt_path=outputs/<run>/checkpoints/last.ckpt. Several nodes: add trainer.num_nodes=N and start
# one process per node with torchrun or srun (SLURM); Lightning reads the cluster environment.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
: "${STR_DATA_ROOT:?set STR_DATA_ROOT to the folder holding train/ val/ test/}"
: "${CLIP_ROOT:?set CLIP_ROOT to the folder holding the CLIP weights}"
exec python "$here/../tools/train.py" +experiment=clip4str-b16 dataset=real \
    model.clip_pretrained="$CLIP_ROOT/${CLIP_FILE:-ViT-B-16.pt}" data.root_dir="$STR_DATA_ROOT" \
    trainer.gpus=8 trainer.accumulate_grad_batches=1 model.batch_size=128 trainer.max_epochs=16 model.lr=8.4e-5 "$@"
