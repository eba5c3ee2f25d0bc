#!/usr/bin/env python3
"""Converts the public annotations of a real scene-text dataset to cropped words, a ground-truth file and an LMDB.

Usage::

    python tools/convert_dataset.py FORMAT ANNOTATIONS IMAGE_ROOT OUT_DIR [options]

The annotations as each dataset publishes them (field names and details: strhub/data/converters/):

    FORMAT     ANNOTATIONS                                               IMAGE_ROOT
    cocotext   COCO_Text.json (COCO-Text v1.4; v2.0's cocotext.v2.json)  MS-COCO's train2014/
    textocr    TextOCR_0.1_train.json or TextOCR_0.1_val.json            train_images/
    art        train_labels.json (ArT)                                   train_images/
    lsvt       train_full_labels.json (LSVT)                             the folder of train_full_images_0/ and _1/
    mlt19      the folder of per-image gt .txt files (MLT19)             the folder of ImagesPart1/ and ImagesPart2/
    ubertext   the folder of per-image truth .txt files (Uber-Text)      e.g. train/1Kx1K/

Writes OUT_DIR/images/<image>_<word index>.jpg (each word warped to an upright rectangle: quadrilaterals by a
perspective warp, polygons of more points by their minimum-area rotated rectangle), OUT_DIR/gt.txt (``images/...
<TAB>label`` lines, PARSeq's format) and the STR LMDB of those lines (create_lmdb_dataset.py; OUT_DIR/lmdb unless
--lmdb_dir). Skipped and counted by reason: illegible or don't-care words ('###', TextOCR's '.', illegibility
flags, COCO-Text's "illegible"), empty labels, words of other languages (--languages), regions outside the image or
without area, malformed annotations, and missing or unreadable images (named). The counts end the output as a table.

--rotation: a crop more than --vertical_ratio times taller than wide (vertical text) is turned 90 degrees clockwise
(cw: text that reads bottom to top becomes horizontal) or counter-clockwise (ccw: text that reads top to bottom), or
left as it is (none). Rotated text whose annotation starts at the text's own top-left corner comes out horizontal
anyway: the warp follows the annotated point order.

Exit codes: 0 written, 1 no word kept, 2 bad arguments, unreadable annotations or an existing output (--overwrite),
130 interrupted.
"""

import shutil
from pathlib import Path
from typing import List, Optional

from _cli import ArgumentParser, CLIError, check_writable, run_cli

from strhub.data.create_lmdb import create_lmdb_dataset
from strhub.data.converters import CROP_FORMATS, FORMATS, ROTATIONS, convert_words
from strhub.data.converters.convert import GT_FILE, IMAGES_DIR


def parse_args(argv: Optional[List[str]] = None):
    p = ArgumentParser(description=__doc__)
    p.add_argument('format', choices=sorted(FORMATS), help='the dataset')
    p.add_argument('annotations', help='the annotation file, or folder of files (see above)')
    p.add_argument('image_root', help='the folder the images are found in')
    p.add_argument('out_dir', help='where images/, gt.txt and the LMDB are written')
    p.add_argument('--split', help='only the images of this split ("set" field: cocotext train or val); default all')
    p.add_argument(
        '--languages',
        help='comma-separated languages or scripts to keep, case-insensitive (cocotext: english; art, mlt19: Latin); '
        'default all',
    )
    p.add_argument('--rotation', choices=ROTATIONS, default='none', help='how to turn vertical crops (see above)')
    p.add_argument('--vertical_ratio', type=float, default=1.5, help='height / width above which a crop is vertical')
    p.add_argument('--crop_format', choices=sorted(CROP_FORMATS), default='jpg', help='crop files (jpg: quality 95)')
    p.add_argument('--lmdb_dir', help='the LMDB folder (default: OUT_DIR/lmdb)')
    p.add_argument('--overwrite', action='store_true', help='replace the images/, gt.txt and LMDB of an earlier run')
    p.add_argument('--max_examples', type=int, default=10, help='skipped images to name')
    args = p.parse_args(argv)
    fmt = FORMATS[args.format]
    if not args.vertical_ratio > 0:
        raise CLIError(f'--vertical_ratio must be > 0 (got {args.vertical_ratio})')
    if args.split is not None and args.split not in fmt.splits:
        raise CLIError(
            f'--split {args.split}: {args.format} splits are {", ".join(fmt.splits)}'
            if fmt.splits
            else f'--split: {args.format} has no split field (each split has its own annotations)'
        )
    if args.languages is not None and not fmt.languages:
        raise CLIError(f'--languages: {args.format} annotations have no language field')
    return args


def _check_paths(args) -> Path:
    """The LMDB folder, after checking the inputs and that the outputs may be written (before any image is read)."""
    fmt = FORMATS[args.format]
    annotations, out_dir = Path(args.annotations), Path(args.out_dir)
    if not (annotations.is_dir() if fmt.folder else annotations.is_file()):
        raise CLIError(f'{args.format} annotations ({fmt.annotations}) not found: {annotations}')
    if not Path(args.image_root).is_dir():
        raise CLIError(f'image folder not found: {args.image_root}')
    lmdb_dir = Path(args.lmdb_dir) if args.lmdb_dir else out_dir / 'lmdb'
    earlier = [p for p in (out_dir / IMAGES_DIR, out_dir / GT_FILE, lmdb_dir / 'data.mdb') if p.exists()]
    if earlier and not args.overwrite:
        raise CLIError(f'{earlier[0]} exists: an earlier conversion (use --overwrite to replace it)')
    check_writable(out_dir / GT_FILE, f'cannot write in {out_dir}')
    return lmdb_dir


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    lmdb_dir = _check_paths(args)
    out_dir, fmt = Path(args.out_dir), FORMATS[args.format]
    if args.overwrite:  # only what a conversion writes; the LMDB is replaced in one step by create_lmdb_dataset
        shutil.rmtree(out_dir / IMAGES_DIR, ignore_errors=True)
        (out_dir / GT_FILE).unlink(missing_ok=True)
    entries = fmt.read(Path(args.annotations), Path(args.image_root), args.split)
    languages = None if args.languages is None else [s.strip() for s in args.languages.split(',') if s.strip()]
    report = convert_words(
        entries,
        out_dir,
        dataset=fmt.title,
        rotation=args.rotation,
        vertical_ratio=args.vertical_ratio,
        crop_format=args.crop_format,
        languages=languages,
        max_examples=args.max_examples,
        progress=True,
    )
    print(report)
    if not report.kept:
        raise CLIError('no word was kept: no LMDB written', exit_code=1)
    try:
        lmdb_report = create_lmdb_dataset(out_dir, out_dir / GT_FILE, lmdb_dir, overwrite=args.overwrite, progress=True)
    except OSError as e:
        raise CLIError(str(e)) from None
    print(lmdb_report)
    return 0


if __name__ == '__main__':
    run_cli(main, prog='convert_dataset.py')
