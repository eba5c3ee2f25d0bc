#!/usr/bin/env python3
"""Generates the built-in synthetic STR dataset (LMDBs) with the fonts found on this machine.

Example::

    python tools/make_synthetic_dataset.py --out data/synthetic                    # 20k/1k/1k, about a minute
    python tools/make_synthetic_dataset.py --out data/synthetic --num-train 100000 --num-val 2000 --num-test 2000
    python tools/make_synthetic_dataset.py --list-fonts                            # usable and rejected fonts

Layout and splits: see ``strhub/data/synthetic.py``. The same seed gives the same LMDB contents (for the same fonts
and Pillow/NumPy versions), whatever ``--workers``.
"""

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if (ROOT / 'strhub').is_dir():  # run from a checkout: use its code, installed or not
    sys.path.insert(0, str(ROOT))

from strhub.data.synthetic import list_fonts, make_dataset, split_fonts  # noqa: E402
from strhub.data.utils import CHARSETS  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--out', help='output folder (required unless --list-fonts)')
    p.add_argument('--num-train', type=int, default=20000, help='training samples (default: %(default)s)')
    p.add_argument('--num-val', type=int, default=1000, help='validation samples (default: %(default)s)')
    p.add_argument('--num-test', type=int, default=1000, help='samples per test set (default: %(default)s)')
    p.add_argument(
        '--charset', default='94_full', choices=sorted(CHARSETS), help='label charset (default: %(default)s)'
    )
    p.add_argument('--seed', type=int, default=0, help='random seed (default: %(default)s)')
    p.add_argument('--workers', type=int, default=os.cpu_count() or 1, help='processes (default: all CPUs)')
    p.add_argument('--max-label-length', type=int, default=25, help='longest label (default: %(default)s)')
    p.add_argument('--difficulty', type=float, default=0.5, help='distortion strength 0..1 (default: %(default)s)')
    p.add_argument('--fonts-dir', help=f'extra font folder(s), {os.pathsep!r}-separated (also $STRHUB_FONTS_DIR)')
    p.add_argument('--no-system-fonts', action='store_true', help='only --fonts-dir fonts and Pillow built-in')
    p.add_argument('--font-holdout', type=float, default=0.2, help='font families held out for SynthFonts')
    p.add_argument('--word-holdout', type=float, default=0.1, help='words held out for the test sets')
    p.add_argument('--shard-size', type=int, default=50000, help='samples per training LMDB (default: %(default)s)')
    p.add_argument('--overwrite', action='store_true', help='replace the LMDBs and meta.json of a previous run')
    p.add_argument('--no-progress', action='store_true', help='no progress bar')
    p.add_argument('--list-fonts', action='store_true', help='print the usable and rejected fonts, then exit')
    args = p.parse_args(argv)
    if not args.list_fonts and not args.out:
        p.error('--out is required')
    if not 0 <= args.difficulty <= 1:
        p.error('--difficulty must be within 0..1')
    if min(args.num_train, args.num_val, args.num_test) < 0 or args.shard_size < 1:
        p.error('counts must be >= 0 and --shard-size >= 1')
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.list_fonts:
        fonts, rejected = list_fonts(args.charset, args.fonts_dir, not args.no_system_fonts, with_rejected=True)
        train, held = split_fonts(fonts, args.font_holdout)
        print(f'{len(fonts)} usable fonts for {args.charset} ({len(held)} held out for SynthFonts):')
        for f in fonts:
            print(f'  {"held-out" if f in held else "train   "}  {f.name:40s} {f.path or "(Pillow built-in)"}')
        print(f'{len(rejected)} rejected:')
        for path, why in rejected:
            print(f'  {path}: {why}')
        return 0
    try:
        s = make_dataset(
            args.out,
            num_train=args.num_train,
            num_val=args.num_val,
            num_test=args.num_test,
            charset=args.charset,
            seed=args.seed,
            workers=args.workers,
            max_label_length=args.max_label_length,
            difficulty=args.difficulty,
            fonts_dir=args.fonts_dir,
            system_fonts=not args.no_system_fonts,
            font_holdout=args.font_holdout,
            word_holdout=args.word_holdout,
            shard_size=args.shard_size,
            overwrite=args.overwrite,
            progress=not args.no_progress,
        )
    except FileExistsError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    print(
        f'Wrote {s["total"]} images to {s["out_dir"]} in {s["elapsed_s"]:.1f} s ({s["images_per_s"]:.0f} images/s, '
        f'{args.workers} workers):'
    )
    for rel, n in s['counts'].items():
        print(f'  {rel:24s} {n:8d}')
    fonts, families = s['fonts'], s['font_families']
    print(
        f'Fonts: {len(fonts["train"])} for train/val/SynthWords ({len(families["train"])} families), '
        f'{len(fonts["heldout"])} held out for SynthFonts (families: {", ".join(families["heldout"]) or "none"})'
    )
    if not fonts['heldout']:
        print('  (fewer than 2 fonts: no SynthFonts test set; add fonts with --fonts-dir)')
    print(
        f'Words: {s["words"]["train"]} training, {s["words"]["test"]} held out. Details: {Path(args.out) / "meta.json"}'
    )
    return 0


if __name__ == '__main__':
    sys.exit(main())
