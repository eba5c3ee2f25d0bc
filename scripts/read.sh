#!/usr/bin/env bash
# Read the text in a folder of images with a checkpoint (the original's scripts/read.sh).
#   scripts/read.sh {gpu_id} {ckpt} {image_folder} [more tools/read.py options, e.g. --format json]
# gpu_id: a CUDA device index (sets CUDA_VISIBLE_DEVICES), or "cpu".
set -euo pipefail

usage() {
    echo "usage: $(basename "$0") {gpu_id|cpu} {ckpt} {image_folder} [tools/read.py options ...]" >&2
    exit 2
}
[ $# -ge 3 ] || usage

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
gpu="$1" ckpt="$2" images="$3"
shift 3
if [ "$gpu" = cpu ]; then
    export CUDA_VISIBLE_DEVICES=""
    device=cpu
else
    export CUDA_VISIBLE_DEVICES="$gpu"
    device=auto
fi
exec "${PYTHON:-python}" "$here/../tools/read.py" "$ckpt" "$images" --device "$device" "$@"
