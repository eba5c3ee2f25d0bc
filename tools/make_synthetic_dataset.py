#!/usr/bin/env python3
r"""Generates the built-in synthetic STR dataset (LMDBs) with the fonts found on this machine.

Example::

    python tools/make_synthetic_dataset.py --out data/synthetic                    # 20k/1k/1k, about a minute
    python tools/make_synthetic_dataset.py --out data/synthetic --num_train 100000 --num_val 2000 --num_test 2000
    python tools/make_synthetic_dataset.py --list_fonts                            # usable and rejected fonts
    python tools/make_synthetic_dataset.py --list_scripts                          # which scripts the fonts cover
    # scene-like training data (each variation at strength 0.8 on a quarter of the samples) and the SynthScene tests
    python tools/make_synthetic_dataset.py --out data/scene --scene 0.8 --scene_tests
    # ... each on 8% of the samples, but curved text on 18% and occlusion on 12%
    python tools/make_synthetic_dataset.py --out data/scene --scene 1 --scene_share 0.08 \
        --scene_shares curve=0.18 occlusion=0.12
    # ... and loose crops (the word small on a wider canvas) on 20%: a variation added later, only when named
    python tools/make_synthetic_dataset.py --out data/scene --scene 1 --scene_share 0.25 --scene_shares loose=0.2
    # mixed-case Latin and Greek (or a charset file, or the characters), English and Greek words
    python tools/make_synthetic_dataset.py --out data/greek --charset 125_latin-greek \
        --words strhub/data/wordlist.txt strhub/data/wordlist_el.txt

Layout and splits: see ``strhub/data/synthetic/build.py``. The same seed gives the same LMDB contents (for the same fonts
and Pillow/NumPy versions), whatever ``--workers``.
"""

import argparse
import os
from pathlib import Path
from typing import Dict, List, Optional

from _cli import ArgumentParser, CLIError, charset_arg, run_cli

from strhub.data.charsets import CHARSETS
from strhub.data.synthetic import list_fonts, make_dataset, split_fonts
from strhub.data.synthetic.fonts import script_coverage
from strhub.data.synthetic.scene import VARIATIONS


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__)
    p.add_argument('--out', help='output folder (required unless --list_fonts)')
    p.add_argument('--num_train', type=int, default=20000, help='training samples')
    p.add_argument('--num_val', type=int, default=1000, help='validation samples')
    p.add_argument('--num_test', type=int, default=1000, help='samples per test set')
    p.add_argument(
        '--charset',
        default='94_full',
        help=f'label charset: a name ({", ".join(CHARSETS)}), a UTF-8 file of its characters, or the characters',
    )
    p.add_argument(
        '--words',
        nargs='+',
        metavar='FILE',
        help='word lists, one word per line (default: the shipped English list); each is drawn from equally often',
    )
    p.add_argument('--seed', type=int, default=0, help='random seed')
    p.add_argument('--workers', type=int, default=os.cpu_count() or 1, help='processes (default: all CPUs)')
    p.add_argument('--max_label_length', type=int, default=25, help='longest label')
    p.add_argument('--difficulty', type=float, default=0.5, help='distortion strength 0..1')
    p.add_argument(
        '--scene',
        type=float,
        default=0.0,
        metavar='STRENGTH',
        help='strength 0..1 of the scene-like variations (curved, perspective, occluded, backgrounds, light-on-dark, '
        'low resolution, blur, JPEG, spacing, capitals, codes, long words; loose crops only when --scene_shares names '
        'them) in train/val (default 0: none)',
    )
    p.add_argument('--scene_share', type=float, default=0.25, help='with --scene: share of samples per variation')
    p.add_argument(
        '--scene_shares',
        nargs='+',
        default=[],
        metavar='NAME=SHARE',
        help=f'with --scene: shares of their own for some variations, e.g. curve=0.2 occlusion=0.12 (names: '
        f'{", ".join(VARIATIONS)})',
    )
    p.add_argument('--scene_tests', action='store_true', help='also write the test sets test/SynthScene/*')
    p.add_argument('--fonts_dir', help=f'extra font folder(s), {os.pathsep!r}-separated (also $STRHUB_FONTS_DIR)')
    p.add_argument('--no_system_fonts', action='store_true', help='only --fonts_dir fonts and Pillow built-in')
    p.add_argument('--font_holdout', type=float, default=0.2, help='share of font families held out for SynthFonts')
    p.add_argument('--word_holdout', type=float, default=0.1, help='share of words held out for the test sets')
    p.add_argument('--shard_size', type=int, default=50000, help='samples per training LMDB')
    p.add_argument('--overwrite', action='store_true', help='replace the LMDBs and meta.json of a previous run')
    p.add_argument('--no_progress', action='store_true', help='no progress bar')
    p.add_argument('--list_fonts', action='store_true', help='print the usable and rejected fonts, then exit')
    p.add_argument('--list_scripts', action='store_true', help='print which scripts the fonts found cover, then exit')
    args = p.parse_args(argv)
    if not (args.list_fonts or args.list_scripts) and not args.out:
        p.error('--out is required')
    for name in ('difficulty', 'scene', 'scene_share'):
        if not 0 <= getattr(args, name) <= 1:
            p.error(f'--{name} must be within 0..1')
    args.scene_shares = _shares(p, args.scene_shares)
    if args.scene_shares and not args.scene:
        p.error('--scene_shares needs --scene (the strength of the variations)')
    if min(args.num_train, args.num_val, args.num_test) < 0 or args.shard_size < 1:
        p.error('counts must be >= 0 and --shard_size >= 1')
    if args.charset not in CHARSETS:  # a name stays a name (meta.json records it)
        args.charset = charset_arg(args.charset)
    for f in args.words or []:
        if not Path(f).is_file():
            p.error(f'--words {f}: no such file')
    return args


def _shares(p: ArgumentParser, items: List[str]) -> Dict[str, float]:
    shares = {}
    for item in items:
        name, _, value = item.partition('=')
        if name not in VARIATIONS:
            p.error(f'--scene_shares {item}: no variation {name!r} (one of {", ".join(VARIATIONS)})')
        try:
            shares[name] = float(value)
        except ValueError:
            p.error(f'--scene_shares {item}: {value!r} is not a number')
        if not 0 <= shares[name] <= 1:
            p.error(f'--scene_shares {item}: the share must be within 0..1')
    return shares


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    if args.list_scripts:
        print('Scripts the fonts found draw (all sample letters and the digits), for --charset:')
        for script, fonts in script_coverage(args.fonts_dir, not args.no_system_fonts).items():
            families = sorted({f.family for f in fonts})
            listed = ', '.join(families[:6]) + (f' and {len(families) - 6} more' if len(families) > 6 else '')
            print(f'  {script:16s} {len(fonts):3d} fonts, {len(families):2d} families{": " + listed if fonts else ""}')
        print('Scripts that need text shaping or run right to left (Arabic, Hebrew, Indic, Thai) are not rendered.')
        return 0
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
            words=args.words,
            scene=args.scene,
            scene_share=args.scene_share,
            scene_shares=args.scene_shares,
            scene_tests=args.scene_tests,
        )
    except (FileExistsError, ValueError) as e:  # ValueError: no word of the lists fits the charset
        raise CLIError(str(e)) from None
    print(
        f'Wrote {s["total"]} images to {s["out_dir"]} in {s["elapsed_s"]:.1f} s ({s["images_per_s"]:.0f} images/s, '
        f'{args.workers} workers):'
    )
    for rel, n in s['counts'].items():
        print(f'  {rel:28s} {n:8d}')
    fonts, families = s['fonts'], s['font_families']
    print(
        f'Fonts: {len(fonts["train"])} for train/val/SynthWords ({len(families["train"])} families), '
        f'{len(fonts["heldout"])} held out for SynthFonts (families: {", ".join(families["heldout"]) or "none"})'
    )
    if not fonts['heldout']:
        print('  (fewer than 2 fonts: no SynthFonts test set; add fonts with --fonts_dir)')
    print(
        f'Words: {s["words"]["train"]} training, {s["words"]["test"]} held out. Details: {Path(args.out) / "meta.json"}'
    )
    return 0


if __name__ == '__main__':
    run_cli(main, prog='make_synthetic_dataset.py')
