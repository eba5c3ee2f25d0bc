#!/usr/bin/env python3
"""Average checkpoints of one network in weight space, written as an inference checkpoint (as tools/export.py).

    python tools/average_weights.py CKPT CKPT [CKPT ...] --out DST.ckpt [--weights W W ...] [--fp32]

A fine-tuned model and the checkpoint it started from (WiSE-FT): the weights slide from one to the other, and a
blend often keeps most of what fine-tuning taught while reading what the start read before. The last snapshots of
one run, or runs fine-tuned from one start, average too; networks trained apart from random weights do not.
Weights are one per checkpoint, >= 0, summing to 1 (default: equal); hyper-parameters are the first checkpoint's.
An earlier shipped clip4str-tiny was a blend of its scene-like fine-tuning and its start
(docs/tiny_model_history.md):

    python tools/average_weights.py "runs/tiny/checkpoints/steps/step=8000.ckpt" \\
        "runs/tiny_clean/checkpoints/steps/step=30000.ckpt" --weights 0.8 0.2 --out runs/tiny/blend.ckpt
"""

from pathlib import Path
from typing import List, Optional

from _cli import ArgumentParser, check_writable, run_cli

PROG = 'average_weights.py'


def main(argv: Optional[List[str]] = None) -> int:
    parser = ArgumentParser(prog=PROG, description=__doc__)
    parser.add_argument('checkpoints', nargs='+', metavar='CKPT', help='checkpoints (or shipped model names)')
    parser.add_argument('--out', required=True, metavar='DST', help='checkpoint to write')
    parser.add_argument('--weights', nargs='+', type=float, metavar='W', help='one per checkpoint (default: equal)')
    parser.add_argument('--fp32', action='store_true', help='write float32 weights (default: float16)')
    parser.add_trust_option()
    args = parser.parse_args(argv)
    dst = Path(args.out)
    check_writable(dst, f'cannot write {dst}')

    from strhub.models.averaging import average_checkpoints

    blend = average_checkpoints(args.checkpoints, dst, args.weights, half=not args.fp32, trust=args.trust_checkpoint)
    for ckpt, w in zip(args.checkpoints, blend.weights):
        print(f'{w:8.4f}  {ckpt}')
    if blend.differing:
        print(f'hyper-parameters of {args.checkpoints[0]}; the others differ in {", ".join(sorted(blend.differing))}')
    print(f'wrote {blend.path} ({blend.path.stat().st_size / 2**20:.1f} MiB)')
    return 0


if __name__ == '__main__':
    run_cli(main, prog=PROG)
