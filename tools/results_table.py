#!/usr/bin/env python3
"""One table from several ``tools/test.py --out RESULTS.json`` files: a row per file, a column per test set, each
cell the word accuracy and, in brackets, 1-NED (%); a set a file did not evaluate is left empty.

    python tools/results_table.py runs/a.json runs/b.json [--labels A B] [--transpose] [--out table.md]

For comparing checkpoints, or one checkpoint on several dataset roots (e.g. before and after fine-tuning, on the new
and on the old test sets). Rows are labelled with ``--labels`` or the file names.
"""

import json
import math
from pathlib import Path
from typing import List, Optional

from _cli import ArgumentParser, CLIError, check_writable, run_cli


def _cell(metrics: Optional[dict]) -> str:
    if metrics is None:
        return ''
    acc, ned = metrics.get('accuracy'), metrics.get('one_minus_ned')
    if acc is None or (isinstance(acc, float) and math.isnan(acc)):  # a set with no readable sample
        return 'n/a'
    return f'{acc:.2f} ({ned:.2f})'


def main(argv: Optional[List[str]] = None) -> int:
    parser = ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('results', nargs='+', type=Path, help='JSON files written by tools/test.py --out')
    parser.add_argument('--labels', nargs='+', help='row labels, one per file (default: the file names)')
    parser.add_argument('--out', type=Path, help='also write the table to this markdown file')
    parser.add_argument('--transpose', action='store_true', help='a row per test set and a column per file')
    args = parser.parse_args(argv)
    if args.labels and len(args.labels) != len(args.results):
        parser.error(f'--labels: {len(args.labels)} labels for {len(args.results)} files')
    if args.out:
        check_writable(args.out, f'--out {args.out}')
    runs = []
    for path in args.results:
        try:
            sets = json.loads(path.read_text())['sets']
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise CLIError(f'{path} is not a tools/test.py --out JSON file ({type(e).__name__}: {e})') from None
        runs.append(sets)
    labels = args.labels or [p.name.removesuffix('.json') for p in args.results]
    names = list(dict.fromkeys(n for sets in runs for n in sets))
    if args.transpose:  # a row per test set, a column per file
        lines = ['| test set | ' + ' | '.join(labels) + ' |', '|---|' + '---:|' * len(labels)]
        lines += [f'| {n} | ' + ' | '.join(_cell(s.get(n)) for s in runs) + ' |' for n in names]
    else:
        lines = ['| | ' + ' | '.join(names) + ' |', '|---|' + '---:|' * len(names)]
        lines += [f'| {label} | ' + ' | '.join(_cell(s.get(n)) for n in names) + ' |' for label, s in zip(labels, runs)]
    table = '\n'.join(lines) + '\n'
    print('word accuracy % (1-NED %)')
    print(table, end='')
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table)
    return 0


if __name__ == '__main__':
    run_cli(main, prog='results_table.py')
