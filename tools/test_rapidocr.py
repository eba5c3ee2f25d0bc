#!/usr/bin/env python3
"""rapidocr's text recogniser on the test sets of ``tools/test.py``, scored the same way: where our models stand
against a widely used recogniser (the README's tables).

    python tools/test_rapidocr.py RAPIDOCR_VENV/bin/python --data_root DIR [--sets NAME ...] [--cased]
                                  [--punctuation] [--threads 2] [--out rapidocr.json] [--out rapidocr.csv]

``RAPIDOCR_VENV`` is a virtual environment of its own, never a dependency of ours:
``python -m venv RAPIDOCR_VENV && RAPIDOCR_VENV/bin/pip install rapidocr==3.10.0 onnxruntime pillow``.
Its recogniser alone reads each image (no detection, no angle classifier). The sets are found as ``tools/test.py``
finds them (every LMDB under ``DIR/test``, or ``--sets``); labels are filtered and case-folded with the same test
charset (36 lower-case alphanumerics unless ``--cased``/``--punctuation``) and rapidocr's text is mapped onto it as
our predictions are, so the tables and the ``--out`` files (for ``tools/results_table.py``) compare like with like.
Confidence is rapidocr's own score. Unreadable records are excluded and listed, as by ``tools/test.py``.
"""

import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Dict, List, Optional

from _cli import ArgumentParser, CLIError, run_cli
from _rapidocr import run_rapidocr
from _results import find_test_root, results_outputs, write_results

PROG = 'test_rapidocr.py'


def main(argv: Optional[List[str]] = None) -> int:
    parser = ArgumentParser(prog=PROG, description=__doc__.split('\n\n')[0])
    parser.add_argument('python', help='an interpreter with rapidocr installed (e.g. RAPIDOCR_VENV/bin/python)')
    parser.add_argument('--data_root', default='data', help='dataset root holding test/<name>/data.mdb')
    parser.add_argument('--sets', nargs='+', metavar='NAME', help='only these sets (default: as tools/test.py)')
    parser.add_argument('--new', action='store_true', help='also evaluate the new benchmarks (ArT, COCOv1.4, Uber)')
    parser.add_argument('--cased', action='store_true', help='case-sensitive: add upper case to the test charset')
    parser.add_argument('--punctuation', action='store_true', help='add punctuation to the test charset')
    parser.add_argument('--max_label_length', type=int, default=25, help='longer labels are left out, as in training')
    parser.add_argument('--threads', type=int, default=2, help="onnxruntime's CPU threads")
    parser.add_argument('--out', action='append', default=[], help='also write the results (.json or .csv)')
    args = parser.parse_args(argv)
    outs = results_outputs(parser, args.out)
    if args.threads < 1:
        parser.error('--threads must be >= 1')
    test_root = find_test_root(args.data_root)

    from strhub.data.charsets import benchmark_charset
    from strhub.data.dataset import CorruptRecordWarning, InvalidLmdbError, LmdbDataset
    from strhub.data.utils import CharsetAdapter
    from strhub.evaluation import Evaluation, SetResult, plan_test_sets, score_predictions

    if args.sets:
        missing = [s for s in args.sets if not (test_root / s / 'data.mdb').is_file()]
        groups = {'Test': [s for s in args.sets if s not in missing]}
    else:
        groups, missing = plan_test_sets(test_root, args.new, False)
    for s in missing:
        print(f'Test set {s} not found in {test_root}: skipped')
    charset = benchmark_charset(args.cased, args.punctuation)
    adapt = CharsetAdapter(charset)
    names = list(dict.fromkeys(n for ns in groups.values() for n in ns))
    with tempfile.TemporaryDirectory(prefix='test_rapidocr_') as tmp:
        # Every set's images as PNG files (lossless), then one rapidocr process reads them all.
        labels: Dict[str, List[str]] = {}
        paths: List[str] = []
        datasets, skipped = {}, {s: 'not found' for s in missing}
        for name in names:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter('ignore', CorruptRecordWarning)  # reported with the results instead
                    dataset = LmdbDataset(test_root / name, charset, args.max_label_length, verify_images=True)
            except (OSError, InvalidLmdbError) as e:
                skipped[name] = f'cannot be read: {e}'
                continue
            datasets[name], labels[name] = dataset, []
            for i in range(len(dataset)):
                image, label = dataset[i]
                path = Path(tmp, f'{len(paths):06d}.png')
                image.save(path)
                paths.append(str(path))
                labels[name].append(label)
            print(f'{name}: {len(labels[name])} images', file=sys.stderr)
        start = time.perf_counter()
        result = run_rapidocr(args.python, paths, args.threads, progress=True)
        elapsed = time.perf_counter() - start
    sets, k = {}, 0
    for name, gts in labels.items():
        texts, scores = result['texts'][k : k + len(gts)], result['scores'][k : k + len(gts)]
        k += len(gts)
        sets[name] = SetResult(score_predictions([adapt(t) for t in texts], scores, gts), datasets[name].bad_records)
    evaluated = {g: [n for n in ns if n in sets] for g, ns in groups.items()}
    results = Evaluation({g: ns for g, ns in evaluated.items() if ns}, sets, skipped, elapsed)
    if not results.groups:
        raise CLIError(f'no test set could be evaluated under {test_root}', exit_code=1)
    print(f'Reader: rapidocr recogniser ({result["version"]}), {args.threads} threads')
    sys.stdout.write(results.report())
    info = dict(
        reader='rapidocr recogniser',
        version=result['version'],
        data_root=str(args.data_root),
        charset_test=charset,
        threads=args.threads,
    )
    write_results(results, outs, info)
    return 0


if __name__ == '__main__':
    run_cli(main, prog=PROG)
