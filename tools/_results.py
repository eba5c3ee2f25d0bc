"""What the evaluation tools (test.py, test_rapidocr.py) share: their --out files and the test folder."""

import argparse
import sys
from pathlib import Path
from typing import Any, Dict, List, Sequence

from _cli import CLIError, check_writable


def results_outputs(parser: argparse.ArgumentParser, outs: Sequence[str]) -> List[Path]:
    """The ``--out`` files of an evaluation: ``.json`` or ``.csv`` names (else a usage error), each checked writable
    now rather than after hours of evaluation."""
    paths = [Path(o) for o in outs]
    for path in paths:
        if path.suffix.lower() not in ('.json', '.csv'):
            parser.error(f'--out {path}: the file name must end in .json or .csv')
    for path in paths:
        check_writable(path, f'--out {path}')
    return paths


def find_test_root(data_root: str) -> Path:
    """``data_root/test``, the folder of the test sets, or a ``CLIError`` saying to set ``--data_root``."""
    test_root = Path(data_root, 'test')
    if not test_root.is_dir():
        raise CLIError(f'no test directory: {test_root} (set --data_root to the dataset root)')
    return test_root


def write_results(results, outs: Sequence[Path], info: Dict[str, Any]) -> None:
    """Writes an evaluation's results (``strhub.evaluation.Evaluation``) to every ``--out`` file: each is attempted,
    one that fails does not cost the others; then a ``CLIError`` naming those that failed."""
    failed = []
    for out in outs:
        try:
            results.write(out, info)
        except OSError as e:
            failed.append(f'{out} ({e})')
            continue
        print(f'Results written to {out}', file=sys.stderr)
    if failed:
        raise CLIError(f'cannot write {", ".join(failed)}', exit_code=1)
