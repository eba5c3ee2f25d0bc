#!/usr/bin/env bash
# Evaluate a checkpoint on the benchmarks (the original's scripts/test.sh).
#   scripts/test.sh {gpu_id} {ckpt} [data_root] [more tools/test.py options, e.g. --new --out results.json]
# gpu_id: a CUDA device index (sets CUDA_VISIBLE_DEVICES), or "cpu". data_root defaults to $STR_DATA_ROOT; it must
# hold test/<name>/data.mdb. ckpt may be a file or a training checkpoints/ directory.
set -euo pipefail

usage() {
    echo "usage: $(basename "$0") {gpu_id|cpu} {ckpt} [data_root] [tools/test.py options ...]" >&2
    echo "       data_root defaults to \$STR_DATA_ROOT" >&2
    exit 2
}
[ $# -ge 2 ] || usage

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
gpu="$1" ckpt="$2"
shift 2
if [ $# -ge 1 ] && [ "${1#-}" = "$1" ]; then
    data_root="$1"
    shift
else
    data_root="${STR_DATA_ROOT:-}"
fi
if [ -z "$data_root" ]; then
    echo "$(basename "$0"): no data root: pass it as the third argument or set STR_DATA_ROOT" >&2
    usage
fi
if [ "$gpu" = cpu ]; then
    export CUDA_VISIBLE_DEVICES=""
    device=cpu
else
    export CUDA_VISIBLE_DEVICES="$gpu"
    device=auto
fi
exec "${PYTHON:-python}" "$here/../tools/test.py" "$ckpt" --data_root "$data_root" --device "$device" "$@"
