#!/usr/bin/env python3
"""Evaluate a CLIP4STR checkpoint on the scene-text benchmarks (the original's ``test.py``, spec §8.1).

    python tools/test.py CKPT --data_root DIR [--new] [--std] [--cased] [--punctuation] [--rotation D]
                         [--batch_size 512] [--num_workers 4] [--device auto|cpu|cuda] [--refine_iters N]
                         [--decode ar|nar] [--openai_meanstd] [--out results.json] [--out results.csv]
                         [--trust_checkpoint] [name:type=value ...]

Test sets are LMDBs under ``DIR/test/<name>``: the standard benchmark (IIIT5k, SVT, IC13_1015, IC15_1811,
IC15_2077, SVTP, CUTE80, HOST, WOST), with ``--new`` also ArT, COCOv1.4 and Uber, and every other LMDB directory
under ``DIR/test`` (e.g. IC13_857, or the built-in synthetic SynthWords/SynthFonts), reported in an "Other" group.
Metrics, tables and the ``<checkpoint>.log_new{True|False}.txt`` file follow the original; the same numbers go to
``--out`` files (``.json`` or ``.csv``, the option may be repeated), each checked writable before anything is loaded.

Every image is decoded before its set is evaluated: a record whose image (or label) is missing or unreadable is
excluded, neither counted in ``# samples`` nor scored, and listed with its key and reason under the table, in the
log and in the ``--out`` files (``num_skipped``, and ``skipped_records`` in JSON).

Deliberate differences from the original: runs on CPU (``--device auto`` is the default, no unconditional
``torch.cuda.synchronize()``); a missing standard set is skipped with a note instead of crashing; extra LMDBs are
evaluated as an "Other" group (``--std`` turns that off); the "Benchmark (Subset)" table, identical to "Benchmark" in
CLIP4STR (spec §10.16), is printed once; a set left empty by the label filter shows ``nan`` instead of dividing by
zero; unreadable records are excluded and reported instead of crashing; ``--openai_meanstd`` normalises with the CLIP
statistics (the original, and the default here, use 0.5/0.5); ``--clip_refine`` and its options are not implemented.
"""

import argparse
import csv
import json
import math
import os
import string
import sys
import time
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Sequence, TextIO, Tuple

from strhub.cli_utils import CLIError, load_model, model_overrides, parse_model_args, resolve_checkpoint, run_cli
from strhub.pretrained import pretrained_path

PROG = 'test.py'

TABLE_HEADER = '| {:<{w}} | # samples | Accuracy | 1 - NED | Confidence | Label Length |'
TABLE_ALIGN = '|:{:-<{w}}:|----------:|---------:|--------:|-----------:|-------------:|'
TABLE_SEP = '|-{:-<{w}}-|-----------|----------|---------|------------|--------------|'
METRICS = ('num_samples', 'num_skipped', 'accuracy', 'one_minus_ned', 'confidence', 'label_length')


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description='Evaluate a CLIP4STR checkpoint on the scene-text test sets.',
        epilog='Unknown arguments name:type=value (type int, float, str or bool) override the checkpoint, '
        'e.g. refine_iters:int=0 decode_ar:bool=false.',
    )
    parser.add_argument(
        'checkpoint',
        help='checkpoint file, a directory (best *val_accuracy=* file, else last.ckpt)'
        ' or a shipped model: clip4str-tiny',
    )
    parser.add_argument('--data_root', default='data', help='dataset root holding test/<name>/data.mdb')
    parser.add_argument('--batch_size', type=int, default=512)
    parser.add_argument('--num_workers', type=int, default=4)
    parser.add_argument('--cased', action='store_true', help='case-sensitive: add upper case to the test charset')
    parser.add_argument('--punctuation', action='store_true', help='add punctuation to the test charset')
    parser.add_argument('--new', action='store_true', help='also evaluate the new benchmarks (ArT, COCOv1.4, Uber)')
    parser.add_argument(
        '--std', action='store_true', help='only the benchmark sets (and New with --new): no other LMDBs under test/'
    )
    parser.add_argument('--rotation', type=int, default=0, help='rotate images counter-clockwise by D degrees')
    parser.add_argument('--device', default='auto', help='auto (CUDA if available), cpu, cuda or cuda:N')
    parser.add_argument('--refine_iters', type=int, default=None, help='refinement iterations (default: checkpoint)')
    parser.add_argument('--decode', choices=('ar', 'nar'), default=None, help='decoding (default: checkpoint)')
    parser.add_argument(
        '--openai_meanstd', action='store_true', help='normalise with the OpenAI CLIP statistics instead of 0.5/0.5'
    )
    parser.add_argument(
        '--out', action='append', default=[], metavar='FILE', help='also write the results to FILE (.json or .csv)'
    )
    parser.add_argument(
        '--trust_checkpoint',
        action='store_true',
        help='load a checkpoint that pickles objects other than tensors and plain data, which can run code: '
        'only for files you trust',
    )
    return parser


def test_charset(cased: bool, punctuation: bool) -> str:
    charset = string.digits + string.ascii_lowercase
    if cased:
        charset += string.ascii_uppercase
    if punctuation:
        charset += string.punctuation
    return charset


def find_lmdbs(test_root: Path) -> List[str]:
    """Names (paths relative to ``test_root``, '/'-separated) of the directories holding a ``data.mdb``."""
    names = []
    for root, dirs, files in os.walk(test_root):
        dirs[:] = sorted(d for d in dirs if not d.startswith('.'))
        if 'data.mdb' in files and Path(root) != test_root:
            names.append(Path(root).relative_to(test_root).as_posix())
    return sorted(names)


def plan_test_sets(test_root: Path, new: bool, std: bool) -> Tuple[Dict[str, List[str]], List[str]]:
    """The test sets to evaluate, by group, and the standard sets that are missing.

    Returns:
        ``({'Benchmark': [...], 'New': [...], 'Other': [...]}, missing)``; groups keep the order of the class
        constants (extra sets sorted by name), only present sets are listed, empty groups are dropped.
    """
    from strhub.data.module import SceneTextDataModule as DM

    present = set(find_lmdbs(test_root))
    # The original evaluates sorted(set(TEST_BENCHMARK_SUB + TEST_BENCHMARK [+ TEST_NEW])) and prints the tables
    # 'Benchmark (Subset)' and 'Benchmark' (identical tuples in CLIP4STR), then 'New'.
    wanted = {'Benchmark': list(dict.fromkeys(DM.TEST_BENCHMARK_SUB + DM.TEST_BENCHMARK))}
    if new:
        wanted['New'] = list(DM.TEST_NEW)
    missing = [s for names in wanted.values() for s in names if s not in present]
    groups = {g: [s for s in names if s in present] for g, names in wanted.items()}
    if not std:
        known = set(DM.TEST_BENCHMARK_SUB + DM.TEST_BENCHMARK + DM.TEST_NEW)
        groups['Other'] = [s for s in sorted(present) if s not in known]
    return {g: names for g, names in groups.items() if names}, missing


def check_writable(path: Path) -> None:
    """Raises a ``CLIError`` naming ``path`` unless it can be written: not a directory, and a writable file or a new
    file whose nearest existing ancestor is a writable directory (missing directories are created on writing)."""
    if path.is_dir():
        raise CLIError(f'--out {path}: is a directory')
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise CLIError(f'--out {path}: {ancestor} is not a directory')
    if not (os.access(path, os.W_OK) if path.exists() else os.access(ancestor, os.W_OK | os.X_OK)):
        raise CLIError(f'--out {path}: permission denied')


def set_metrics(res, num_skipped: int = 0) -> Dict[str, float]:
    """Metrics of a ``BatchResult`` (percentages, mean predicted length); NaN for an empty set."""
    if res.num_samples == 0:
        m = dict(num_samples=0, accuracy=math.nan, one_minus_ned=math.nan, confidence=math.nan, label_length=math.nan)
    else:
        m = res.metrics()
    return dict(m, num_skipped=num_skipped)


def format_table(rows: Sequence[Tuple[str, Dict[str, float]]], combined: Dict[str, float]) -> str:
    """The original's Markdown table (``print_results_table``): one row per set, then the Combined row."""
    w = max([len(name) for name, _ in rows] + [len('Dataset'), len('Combined')])

    def row(name: str, m: Dict[str, float]) -> str:
        return (
            f'| {name:<{w}} | {m["num_samples"]:>9} | {m["accuracy"]:>8.2f} | {m["one_minus_ned"]:>7.2f} '
            f'| {m["confidence"]:>10.2f} | {m["label_length"]:>12.2f} |'
        )

    lines = [TABLE_HEADER.format('Dataset', w=w), TABLE_ALIGN.format('----', w=w)]
    lines += [row(name, m) for name, m in rows]
    lines += [TABLE_SEP.format('----', w=w), row('Combined', combined)]
    return '\n'.join(lines)


def format_skipped(name: str, num_samples: int, records: Sequence[Tuple[str, str]]) -> str:
    """The line under a table for a set with unreadable records."""
    from strhub.data.dataset import describe_records

    return (
        f'Skipped {len(records)} unreadable record(s) of {name} ({num_samples} evaluated): '
        f'{describe_records(records)}\n'
    )


def format_report(
    groups: Dict[str, List[str]],
    metrics: Dict[str, Dict[str, float]],
    combined: Dict[str, Dict[str, float]],
    elapsed: float,
    total_samples: int,
    bad_records: Dict[str, List[Tuple[str, str]]],
) -> str:
    parts = []
    for group, names in groups.items():
        # print(f'{group} set:'), the table, then print('\n') as the original (two line breaks); the skipped
        # records of each set, if any, between the two.
        notes = ''.join(format_skipped(s, metrics[s]['num_samples'], bad_records[s]) for s in names if bad_records[s])
        table = format_table([(s, metrics[s]) for s in names], combined[group])
        parts.append(f'{group} set:\n{table}\n{notes}\n\n')
    average_ms = elapsed * 1000.0 / total_samples if total_samples else math.nan
    # The spec gives this line's wording only; seconds and milliseconds are rounded to 2 decimals here.
    parts.append(f'Time: Total {elapsed:.2f}s, Average {average_ms:.2f}ms. Total samples {total_samples}.\n')
    return ''.join(parts)


def _json_number(x):
    return None if isinstance(x, float) and not math.isfinite(x) else x


def write_json(
    path: Path, info: dict, groups, metrics, combined, bad_records, skipped, elapsed: float, total: int
) -> None:
    doc = dict(
        info,
        sets={
            s: dict(
                group=g,
                **{k: _json_number(v) for k, v in metrics[s].items()},
                skipped_records=[dict(key=key, reason=reason) for key, reason in bad_records[s]],
            )
            for g, ns in groups.items()
            for s in ns
        },
        groups={
            g: dict(sets=ns, combined={k: _json_number(v) for k, v in combined[g].items()}) for g, ns in groups.items()
        },
        skipped=skipped,
        time=dict(
            total_s=elapsed,
            average_ms=_json_number(elapsed * 1000.0 / total if total else math.nan),
            total_samples=total,
        ),
    )
    path.write_text(json.dumps(doc, indent=2) + '\n')


def write_csv(path: Path, groups, metrics, combined) -> None:
    with open(path, 'w', newline='') as f:
        w = csv.writer(f)
        w.writerow(('group', 'dataset') + METRICS)
        for g, names in groups.items():
            for s, m in [(s, metrics[s]) for s in names] + [('Combined', combined[g])]:
                w.writerow([g, s] + [m[k] for k in METRICS])


def _tee(text: str, log: Optional[TextIO]) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()
    if log is not None:
        log.write(text)


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    flags = [u for u in unknown if u.startswith('-')]
    if flags:
        parser.error(f'unrecognized arguments: {" ".join(flags)}')
    if args.batch_size < 1:
        parser.error('--batch_size must be >= 1')
    if args.num_workers < 0:
        parser.error('--num_workers must be >= 0')
    outs = [Path(o) for o in args.out]
    for o in outs:
        if o.suffix.lower() not in ('.json', '.csv'):
            parser.error(f'--out {o}: the file name must end in .json or .csv')
    for o in outs:  # now, not after hours of evaluation
        check_writable(o)
    kwargs = model_overrides(args.refine_iters, args.decode, parse_model_args(unknown))
    kwargs['charset_test'] = test_charset(args.cased, args.punctuation)  # as the original: the flags win
    checkpoint = resolve_checkpoint(args.checkpoint)
    if Path(args.checkpoint).is_dir():
        print(f'Checkpoint: {checkpoint}')
    test_root = Path(args.data_root, 'test')
    if not test_root.is_dir():
        raise CLIError(f'no test directory: {test_root} (set --data_root to the dataset root)')

    import torch
    from tqdm import tqdm

    from strhub.cli_utils import select_device
    from strhub.data.dataset import CorruptRecordWarning, InvalidLmdbError
    from strhub.data.module import SceneTextDataModule
    from strhub.models.base import BatchResult

    groups, missing = plan_test_sets(test_root, args.new, args.std)
    skipped = {}
    for s in missing:
        print(f'Test set {s} not found in {test_root}: skipped')
        skipped[s] = 'not found'

    print(f'Additional keyword arguments: {kwargs}')
    device = select_device(args.device)
    model = load_model(checkpoint, trust=args.trust_checkpoint, **kwargs).to(device)
    hp = model.hparams
    datamodule = SceneTextDataModule(
        args.data_root,
        '_unused_',
        hp.img_size,
        hp.max_label_length,
        hp.charset_train,
        hp.charset_test,
        args.batch_size,
        args.num_workers,
        False,
        rotation=args.rotation,
        test_openai_meanstd=args.openai_meanstd,
    )

    names = [s for ns in groups.values() for s in ns]
    width = max(map(len, names), default=0)
    results: Dict[str, BatchResult] = {}
    bad_records: Dict[str, List[Tuple[str, str]]] = {}
    start = time.perf_counter()
    with torch.inference_mode():
        for k, name in enumerate(names, 1):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter('ignore', CorruptRecordWarning)  # reported with the results instead
                    loader = datamodule.test_dataloaders([name])[name]
            except (OSError, InvalidLmdbError) as e:
                print(f'Test set {name} cannot be read: skipped ({e})')
                skipped[name] = f'cannot be read: {e}'
                continue
            bad_records[name] = loader.dataset.bad_records  # excluded: not counted, not scored
            res = BatchResult()
            for imgs, labels in tqdm(loader, desc=f'[{k}/{len(names)}] {name:>{width}}', unit='batch', file=sys.stderr):
                res += model.eval_batch(imgs.to(device, non_blocking=True), labels, validation=False)
            results[name] = res
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - start

    groups = {g: [s for s in ns if s in results] for g, ns in groups.items()}
    groups = {g: ns for g, ns in groups.items() if ns}
    if not groups:
        raise CLIError(f'no test set could be evaluated under {test_root}', exit_code=1)
    metrics = {s: set_metrics(r, len(bad_records[s])) for s, r in results.items()}
    combined = {}
    for g, ns in groups.items():
        total = BatchResult()
        for s in ns:
            total += results[s]
        combined[g] = set_metrics(total, sum(len(bad_records[s]) for s in ns))
    total_samples = sum(r.num_samples for r in results.values())
    report = format_report(groups, metrics, combined, elapsed, total_samples, bad_records)

    # Written next to the checkpoint, as the original (a read-only location only costs a warning); for a shipped
    # model given by name, in the working directory rather than inside the package.
    log_path = Path(f'{args.checkpoint if pretrained_path(args.checkpoint) else checkpoint}.log_new{args.new}.txt')
    try:
        log = open(log_path, 'w')
    except OSError as e:
        print(f'warning: cannot write {log_path}: {e}', file=sys.stderr)
        log = None
    try:
        if log is not None:
            log.writelines(f'Test set {s} {reason}: skipped\n' for s, reason in skipped.items())
        _tee(report, log)
    finally:
        if log is not None:
            log.close()

    info = dict(
        checkpoint=str(checkpoint),
        data_root=str(args.data_root),
        charset_test=hp.charset_test,
        model_kwargs=kwargs,
        new=args.new,
        std=args.std,
        cased=args.cased,
        punctuation=args.punctuation,
        rotation=args.rotation,
        openai_meanstd=args.openai_meanstd,
        device=str(device),
    )
    failed = []
    for o in outs:  # every output is attempted: one that fails does not cost the others
        try:
            o.parent.mkdir(parents=True, exist_ok=True)
            if o.suffix.lower() == '.json':
                write_json(o, info, groups, metrics, combined, bad_records, skipped, elapsed, total_samples)
            else:
                write_csv(o, groups, metrics, combined)
        except OSError as e:
            failed.append(f'{o} ({e})')
            continue
        print(f'Results written to {o}', file=sys.stderr)
    if failed:
        raise CLIError(f'cannot write {", ".join(failed)}', exit_code=1)
    return 0


if __name__ == '__main__':
    run_cli(main, prog=PROG)
