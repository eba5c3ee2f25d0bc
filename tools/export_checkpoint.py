#!/usr/bin/env python3
"""Inference-only copy of a checkpoint (ours or a released one): float16 weights + hyper-parameters.

python tools/export_checkpoint.py runs/tiny/checkpoints/last.ckpt strhub/pretrained/clip4str_tiny.ckpt
"""

import os
from pathlib import Path
from typing import List, Optional

from _cli import ArgumentParser, CLIError, run_cli

from strhub.models.checkpoint import export_checkpoint


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


def main(argv: Optional[List[str]] = None) -> int:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument('src', help='checkpoint to export (ours, a released one, or a shipped model by name)')
    parser.add_argument('dst', help='file to write (replaced atomically)')
    parser.add_argument('--fp32', action='store_true', help='keep float32 weights (default: float16)')
    parser.add_argument(
        '--trust_checkpoint',
        action='store_true',
        help='load a checkpoint that pickles objects other than tensors and plain data, which can run code: '
        'only for files you trust',
    )
    args = parser.parse_args(argv)
    reason = _unwritable(Path(args.dst))
    if reason:
        raise CLIError(f'cannot write {args.dst}: {reason}')
    out = export_checkpoint(args.src, args.dst, half=not args.fp32, trust=args.trust_checkpoint)
    print(f'wrote {out} ({out.stat().st_size / 2**20:.1f} MiB)')
    return 0


if __name__ == '__main__':
    run_cli(main, prog='export_checkpoint.py')
