#!/usr/bin/env python3
"""Inference-only copy of a checkpoint (ours or a released one): float16 weights + hyper-parameters.

python tools/export_checkpoint.py runs/tiny/checkpoints/last.ckpt strhub/pretrained/clip4str_tiny.ckpt
"""

import argparse
import os
import sys
from pathlib import Path

from strhub.models.checkpoint import CheckpointError, export_checkpoint


def _unwritable(dst: Path) -> str:
    """Why ``dst`` cannot be written ('' if it can), checked before the source is read."""
    if dst.is_dir():
        return 'it is a folder'
    parent = next((p for p in [dst.parent, *dst.parent.parents] if p.exists()), Path('.'))
    if not parent.is_dir():
        return f'{parent} is not a folder'
    if not os.access(parent, os.W_OK | os.X_OK):
        return f'{parent} is not writable'
    return ''


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('src')
    parser.add_argument('dst')
    parser.add_argument('--fp32', action='store_true', help='keep float32 weights')
    parser.add_argument(
        '--trust_checkpoint',
        action='store_true',
        help='load a checkpoint that pickles objects other than tensors and plain data, which can run code: '
        'only for files you trust',
    )
    args = parser.parse_args()
    reason = _unwritable(Path(args.dst))
    if reason:
        sys.exit(f'error: cannot write {args.dst}: {reason}')
    try:
        out = export_checkpoint(args.src, args.dst, half=not args.fp32, trust=args.trust_checkpoint)
    except CheckpointError as e:
        sys.exit(f'error: {e}')
    print(f'wrote {out} ({out.stat().st_size / 2**20:.1f} MiB)')


if __name__ == '__main__':
    main()
