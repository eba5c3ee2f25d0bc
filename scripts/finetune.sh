#!/usr/bin/env bash
# Fine-tune a checkpoint on your own data (README, "Fine-tuning"):
#
#   bash scripts/finetune.sh CKPT DATA_ROOT [more Hydra overrides]
#
# CKPT: ours, a released CLIP4STR checkpoint, or a shipped name (clip4str-tiny). DATA_ROOT holds train/ (every
# LMDB under it is used) and val/, e.g. from tools/create_lmdb_dataset.py. The network is the checkpoint's
# (configs/experiment/finetune.yaml has the defaults and why); change its shape on the command line, e.g.
#   bash scripts/finetune.sh CKPT data/greek 'model.charset_train=${charset:125_latin-greek}'   # new characters
#   bash scripts/finetune.sh CKPT data/mine 'model.charset_train=${charset:my_charset.txt}'     # from a file
#   ... model.max_label_length=40 'model.img_size=[224,448]'                    # longer text, wider images
# Uses one GPU if there is one, else the CPU (trainer.gpus=N to choose), and $PYTHON (default python3). Prints the
# run folder; resume an interrupted run with "ckpt_path='RUN/checkpoints/last.ckpt'".
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [ $# -lt 2 ]; then
    echo "usage: bash scripts/finetune.sh CKPT DATA_ROOT [Hydra overrides]" >&2
    exit 2
fi
ckpt="$1"
data="$2"
shift 2
source "$here/cpu_malloc.sh"
gpus=$("${PYTHON:-python3}" -c 'import torch; print(min(torch.cuda.device_count(), 1))')
exec "${PYTHON:-python3}" "$here/../tools/train.py" +experiment=finetune "pretrained='$ckpt'" "data.root_dir='$data'" \
    trainer.gpus="$gpus" "$@"
