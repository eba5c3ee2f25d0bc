#!/usr/bin/env python3
"""Inference-only copy of a checkpoint (ours or a released one): float16 weights + hyper-parameters.

python tools/export_checkpoint.py runs/tiny/checkpoints/last.ckpt strhub/pretrained/clip4str_tiny.ckpt
"""

import argparse
import sys

from strhub.models.checkpoint import CheckpointError, export_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('src')
    parser.add_argument('dst')
    parser.add_argument('--fp32', action='store_true', help='keep float32 weights')
    args = parser.parse_args()
    try:
        out = export_checkpoint(args.src, args.dst, half=not args.fp32)
    except CheckpointError as e:
        sys.exit(f'error: {e}')
    print(f'wrote {out} ({out.stat().st_size / 2**20:.1f} MiB)')


if __name__ == '__main__':
    main()
