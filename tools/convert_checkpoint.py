#!/usr/bin/env python3
"""Convert a training checkpoint for release: its weights (float16; --fp32 keeps float32) and hyper-parameters, without
optimizer, scheduler and loop state. A fraction of the size, the same outputs (exactly with --fp32); not resumable.

    python tools/convert_checkpoint.py SRC DST [--fp32] [--trust_checkpoint]

The same as ``tools/export.py SRC DST.ckpt`` (both call ``strhub.models.checkpoint.export_checkpoint``). SRC may be a
released checkpoint or a model's name too; DST is replaced atomically and loads wherever a checkpoint is accepted.
"""

from pathlib import Path
from typing import List, Optional

from _cli import ArgumentParser, check_writable, run_cli

PROG = 'convert_checkpoint.py'


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog=PROG, description=__doc__)
    parser.add_argument('src', help='checkpoint to convert (ours, a released one, or a model name)')
    parser.add_argument('dst', help='file to write')
    parser.add_argument('--fp32', action='store_true', help='keep float32 weights (default: float16)')
    parser.add_trust_option()
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    dst = Path(args.dst)
    check_writable(dst, f'cannot write {dst}')
    from strhub.models.checkpoint import export_checkpoint

    out = export_checkpoint(args.src, dst, half=not args.fp32, trust=args.trust_checkpoint)
    print(f'wrote {out} ({out.stat().st_size / 2**20:.1f} MiB)')
    return 0


if __name__ == '__main__':
    run_cli(main, prog=PROG)
