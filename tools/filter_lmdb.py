#!/usr/bin/env python3
"""Copy the records of an STR LMDB that meet criteria (charset, label length, image size) into a new STR LMDB.

  python tools/filter_lmdb.py data/train/real/ArT data/clean/ArT --charset 94_full --max_label_length 25
  python tools/filter_lmdb.py mine/ mine_greek/ --charset 125_latin-greek --fold_case --min_height 8

SRC is one LMDB folder (one holding data.mdb); for a tree of them run it once per folder, e.g.
  for d in $(find data/train -name data.mdb -printf '%h\\n'); do python tools/filter_lmdb.py "$d" "clean/${d#data/}"; done

Labels are judged NFC-composed, whitespace included, and copied as stored; images are copied byte for byte. Every
image is decoded: unreadable records (missing keys, labels not UTF-8, undecodable or truncated images) are counted,
named and left out, and the rest is processed. A record is counted under the first criterion it fails, in the order
of the report's table. --charset is exact (an upper-case letter is outside 36_lowercase) unless --fold_case, which
folds case as training does: labels of a charset without upper case are lower-cased for the check (and one without
lower case upper-cased); they are still written as stored. Stricter than training with an ASCII charset, which folds
accents to ASCII and deletes the characters outside the charset instead of dropping the label.

The LMDB is built in a temporary folder and moved into place only when at least one record is kept; a failed or
interrupted run leaves DST as it was (with --overwrite, the old LMDB stays readable until the new one replaces it, so
DST may be SRC). Other files in DST are kept.

Exit codes: 0 written, 1 no record kept, 2 bad arguments, SRC or destination, 130 interrupted.
"""

import shutil
from pathlib import Path
from typing import List, Optional

from _cli import ArgumentParser, CLIError, charset_arg, run_cli

from strhub.data.lmdb_io import LMDB_FILES, count_samples, install_lmdb, make_build_root


def build_parser() -> ArgumentParser:
    p = ArgumentParser(description=__doc__)
    p.add_argument('src', metavar='SRC', help='LMDB folder to read')
    p.add_argument('dst', metavar='DST', help='LMDB folder to write')
    p.add_argument('--charset', help='drop labels with a character outside it: a name, a file or the characters')
    p.add_argument('--fold_case', action='store_true', help='compare labels to --charset case-folded, as training')
    p.add_argument('--min_label_length', type=int, default=1, help='drop shorter labels')
    p.add_argument('--max_label_length', type=int, help='drop longer labels (default: no limit)')
    p.add_argument(
        '--min_width', type=int, default=0, help='drop narrower images, in pixels (default: %(default)s, none)'
    )
    p.add_argument(
        '--min_height', type=int, default=0, help='drop lower images, in pixels (default: %(default)s, none)'
    )
    p.add_argument('--min_aspect', type=float, help='drop images whose width / height is smaller (default: none)')
    p.add_argument('--max_aspect', type=float, help='drop images whose width / height is larger (default: none)')
    p.add_argument('--overwrite', action='store_true', help='replace an existing LMDB at DST')
    p.add_argument('--max_listed', type=int, default=20, help='unreadable records named in the report (0: all)')
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    src, dst = Path(args.src), Path(args.dst)
    charset = charset_arg(args.charset)
    if args.fold_case and charset is None:
        raise CLIError('--fold_case needs --charset')
    if dst.exists() and not dst.is_dir():
        raise CLIError(f'{dst} exists and is not a folder')
    if (dst / LMDB_FILES[0]).exists() and not args.overwrite:
        raise CLIError(f'an LMDB already exists at {dst} (use --overwrite to replace it)')
    try:
        count_samples(src)  # SRC is checked before anything is written
    except FileNotFoundError as e:
        raise CLIError(str(e)) from None

    from strhub.data.lmdb_tools import Criteria, filter_lmdb  # torch: after the quick checks

    try:
        criteria = Criteria(
            charset=charset,
            fold_case=args.fold_case,
            min_label_length=args.min_label_length,
            max_label_length=args.max_label_length,
            min_width=args.min_width,
            min_height=args.min_height,
            min_aspect=args.min_aspect,
            max_aspect=args.max_aspect,
        )
    except ValueError as e:
        raise CLIError(str(e)) from None
    try:
        build_root = make_build_root(dst)
    except OSError as e:
        raise CLIError(str(e)) from None
    try:
        build_dir = build_root / 'lmdb'
        report = filter_lmdb(src, build_dir, criteria, progress=True)
        if report.kept:
            install_lmdb(build_dir, dst)
    except KeyboardInterrupt:
        raise CLIError(f'interrupted: {dst} left as it was', exit_code=130) from None
    finally:
        shutil.rmtree(build_root, ignore_errors=True)
    print(report.format(args.max_listed))
    if not report.kept:
        raise CLIError(f'no record met the criteria: nothing written, {dst} left as it was', exit_code=1)
    print(f'Wrote {report.kept} of {report.total} records to {dst}.')
    return 0


if __name__ == '__main__':
    run_cli(main, prog='filter_lmdb.py')
