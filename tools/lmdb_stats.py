#!/usr/bin/env python3
"""What an STR LMDB holds: records and unreadable ones, label lengths, characters, image sizes; a contact sheet.

  python tools/lmdb_stats.py data/train/real/ArT --charset 94_full --contact_sheet art.png --json art.json

Every image is decoded: unreadable records (missing keys, labels not UTF-8, undecodable or truncated images) are
counted and named, and the numbers describe the readable ones. Labels are counted NFC-composed, whitespace included.
With --charset the characters outside it are flagged (exactly, or after case folding as training with --fold_case)
and the charset's characters that no label uses are listed. --contact_sheet draws --samples random readable records
(the same ones for a --seed), each image over its label, with an installed font that draws every character of the
labels when there is one, else Pillow's built-in font.

Exit codes: 0 done, 2 bad arguments or LMDB, 130 interrupted.
"""

import json
from pathlib import Path
from typing import List, Optional

from _cli import ArgumentParser, CLIError, charset_arg, check_writable, run_cli

from strhub.data.lmdb_io import count_samples


def build_parser() -> ArgumentParser:
    p = ArgumentParser(description=__doc__)
    p.add_argument('lmdb', metavar='LMDB', help='LMDB folder (one holding data.mdb)')
    p.add_argument('--charset', help='flag characters outside it: a name, a file or the characters')
    p.add_argument('--fold_case', action='store_true', help='compare characters to --charset case-folded, as training')
    p.add_argument('--top', type=int, default=20, help='most common characters listed')
    p.add_argument('--rare', type=int, default=10, help='rarest characters listed')
    p.add_argument('--max_listed', type=int, default=20, help='unreadable records named (0: all)')
    p.add_argument('--contact_sheet', metavar='PNG', help='write a contact sheet of random samples')
    p.add_argument('--samples', type=int, default=64, help='samples on the contact sheet')
    p.add_argument('--columns', type=int, default=8, help='samples per row of the contact sheet')
    p.add_argument('--seed', type=int, default=0, help='seed of the random choice of samples (default: %(default)s)')
    p.add_argument('--json', metavar='PATH', help='also write the numbers as JSON')
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    for name, least in (('top', 0), ('rare', 0), ('samples', 1), ('columns', 1)):
        if getattr(args, name) < least:
            raise CLIError(f'--{name} must be >= {least} (got {getattr(args, name)})')
    charset = charset_arg(args.charset)
    if args.fold_case and charset is None:
        raise CLIError('--fold_case needs --charset')
    for option, path in (('--contact_sheet', args.contact_sheet), ('--json', args.json)):
        if path:
            check_writable(Path(path), option)  # before the long read
    try:
        count_samples(args.lmdb)
    except FileNotFoundError as e:
        raise CLIError(str(e)) from None

    from strhub.data.lmdb_stats import contact_sheet, lmdb_stats, sample_indices  # torch: after the quick checks
    from strhub.data.lmdb_tools import CharsetCheck

    stats = lmdb_stats(args.lmdb, CharsetCheck(charset, args.fold_case) if charset else None, progress=True)
    print(stats.format(args.top, args.rare, args.max_listed))
    numbers = stats.to_dict()
    if args.contact_sheet:
        indices = sample_indices(stats, args.samples, args.seed)
        if indices:
            path = Path(args.contact_sheet)
            path.parent.mkdir(parents=True, exist_ok=True)
            sheet = contact_sheet(args.lmdb, indices, args.columns)
            sheet.save(path, format='PNG')
            print(f'\nContact sheet: {path} ({len(indices)} samples, {sheet.width}x{sheet.height} pixels)')
            numbers['contact_sheet'] = dict(path=str(path), indices=indices)
        else:
            print('\nNo contact sheet: no readable sample')
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(numbers, indent=2, ensure_ascii=False) + '\n', encoding='utf-8')
    return 0


if __name__ == '__main__':
    run_cli(main, prog='lmdb_stats.py')
