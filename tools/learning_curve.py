#!/usr/bin/env python3
"""Accuracy-vs-training-time curve of a run: evaluates every snapshot of ``checkpoints/steps/`` (written with
``checkpoint_every_n_steps=N``) as ``tools/test.py`` does (``strhub.evaluation``) and writes a markdown table, a CSV
and a PNG plot.

    python tools/learning_curve.py RUN_DIR --data_root DATA [--out_prefix docs/tiny_curve] [--batch_size 128]
    python tools/learning_curve.py RUN_A RUN_B --data_root DATA --out_prefix runs/ab   # two runs, one plot
    python tools/learning_curve.py RUN_DIR --data_root DATA --sets SynthWords SynthScene/mixed   # some sets only

Training time of a snapshot = its file time minus the run's first TensorBoard event (so it includes validation
and checkpointing, as a user waiting for the run sees it), less the pauses of a resumed run (from one event file's
last event to the next file's first). Several runs: a table and CSV per run
(``PREFIX.RUN_NAME.md``/``.csv``) and one plot of them all (``PREFIX.png``). Each snapshot's results are kept beside it
(``step=N.ckpt.test.json``) and reused, so the command can run while training goes on and only tests new snapshots.
"""

import csv
import json
import re
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from _cli import ArgumentParser, CLIError, run_cli
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def training_segments(run_dir: Path) -> List[Tuple[float, float]]:
    """(first, last) event time of each of the run's sessions: a resumed run writes a new event file."""
    segments = []
    for path in run_dir.glob('events.out.tfevents.*'):
        ea = EventAccumulator(str(path))
        ea.Reload()
        times = [e.wall_time for tag in ea.Tags()['scalars'] for e in ea.Scalars(tag)]
        if times:
            segments.append((min(times), max(times)))
    if not segments:
        raise CLIError(f"no TensorBoard events in {run_dir}: the run's start is unknown")
    return sorted(segments)


def training_minutes(segments: List[Tuple[float, float]], t: float) -> float:
    """Minutes of training up to time t: the sessions before t's whole (to their last event), t's own up to t."""
    seconds = 0.0
    for i, (start, end) in enumerate(segments):
        if i + 1 < len(segments) and t >= segments[i + 1][0]:
            seconds += end - start
        else:
            seconds += t - start
            break
    return seconds / 60


def evaluate(ckpt: Path, data_root: str, batch_size: int, openai_meanstd: bool, sets: Optional[List[str]]) -> dict:
    """Per-set results of a snapshot (as ``tools/test.py --out x.json`` has them), from its kept results file when
    they were made the same way."""
    kept = ckpt.with_name(ckpt.name + '.test.json')
    setup = {'data_root': str(Path(data_root).resolve()), 'openai_meanstd': openai_meanstd, 'sets': sets}
    if kept.is_file() and kept.stat().st_mtime >= ckpt.stat().st_mtime:
        saved = json.loads(kept.read_text())
        if saved.get('setup') == setup:
            return saved['sets']
    from strhub.evaluation import evaluate as run_evaluation
    from strhub.evaluation import plan_test_sets
    from strhub.models import load_from_checkpoint

    groups = {'Test': sets} if sets else plan_test_sets(Path(data_root, 'test'))[0]
    model = load_from_checkpoint(ckpt)
    results = run_evaluation(model, data_root, groups, batch_size, 0, 'cpu', openai_meanstd=openai_meanstd)
    sets = results.to_dict()['sets']
    kept.write_text(json.dumps({'setup': setup, 'sets': sets}, indent=1) + '\n')
    return sets


def curve(
    run_dir: Path, data_root: str, batch_size: int, openai_meanstd: bool, sets: Optional[List[str]]
) -> List[dict]:
    """A row per snapshot of the run: step, minutes, accuracy and 1-NED per test set."""
    steps_dir = run_dir / 'checkpoints' / 'steps'
    snapshots = sorted(steps_dir.glob('step=*.ckpt'), key=lambda p: int(re.search(r'step=(\d+)', p.name).group(1)))
    if not snapshots:
        raise CLIError(f'no snapshots in {steps_dir} (train with checkpoint_every_n_steps)')
    segments = training_segments(run_dir)
    rows = []
    for ckpt in snapshots:
        results = evaluate(ckpt, data_root, batch_size, openai_meanstd, sets)
        row = {
            'step': int(re.search(r'step=(\d+)', ckpt.name).group(1)),
            'minutes': training_minutes(segments, ckpt.stat().st_mtime),
        }
        for name, m in results.items():
            row[f'{name} acc. %'], row[f'{name} 1-NED %'] = m['accuracy'], m['one_minus_ned']
        rows.append(row)
        print(' '.join(f'{k}={v:.2f}' if isinstance(v, float) else f'{k}={v}' for k, v in row.items()), flush=True)
    return rows


def write_table(rows: List[dict], prefix: str) -> None:
    names = [k for k in rows[0] if k not in ('step', 'minutes')]
    with open(f'{prefix}.csv', 'w', newline='') as f:
        w = csv.DictWriter(f, fieldnames=rows[0].keys())
        w.writeheader()
        w.writerows(rows)
    table = ['| step | minutes | ' + ' | '.join(names) + ' |', '|---:|---:|' + '---:|' * len(names)]
    table += [f'| {r["step"]} | {r["minutes"]:.0f} | ' + ' | '.join(f'{r[n]:.2f}' for n in names) + ' |' for r in rows]
    Path(f'{prefix}.md').write_text('\n'.join(table) + '\n')
    print('\n'.join(table))


def plot(runs: Dict[str, List[dict]], path: str) -> None:
    """Word accuracy against minutes, a line per run and test set (labelled with the run's name when several)."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for run, rows in runs.items():
        for n in (n for n in rows[0] if n.endswith('acc. %')):
            label = n[: -len(' acc. %')] if len(runs) == 1 else f'{run}: {n[: -len(" acc. %")]}'
            ax.plot([r['minutes'] for r in rows], [r[n] for r in rows], marker='o', label=label)
    ax.set_xlabel('training time on 2 CPU cores (minutes)')
    ax.set_ylabel('word accuracy (%)')
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: Optional[List[str]] = None) -> int:
    parser = ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument(
        'run_dirs', nargs='+', type=Path, help='run folders (each holds checkpoints/steps/ and the TensorBoard log)'
    )
    parser.add_argument('--data_root', required=True, help='dataset root holding test/<name>/data.mdb')
    parser.add_argument('--out_prefix', default=None, help='default: RUN_DIR/learning_curve (one run)')
    parser.add_argument('--batch_size', type=int, default=128, help='images per forward pass')
    parser.add_argument('--sets', nargs='+', metavar='NAME', help='only these test sets (default: all, as test.py)')
    parser.add_argument(
        '--openai_meanstd',
        action='store_true',
        help="test with the OpenAI CLIP statistics (the training normalisation) instead of test.py's 0.5/0.5",
    )
    args = parser.parse_args(argv)
    if len(args.run_dirs) > 1 and not args.out_prefix:
        parser.error('--out_prefix is required with several runs')
    if len({r.name for r in args.run_dirs}) < len(args.run_dirs):
        parser.error('runs with the same folder name cannot be told apart in the outputs')
    prefix = Path(args.out_prefix) if args.out_prefix else args.run_dirs[0] / 'learning_curve'
    prefix.parent.mkdir(parents=True, exist_ok=True)
    runs = {}
    for run_dir in args.run_dirs:
        runs[run_dir.name] = curve(run_dir, args.data_root, args.batch_size, args.openai_meanstd, args.sets)
        write_table(runs[run_dir.name], str(prefix) if len(args.run_dirs) == 1 else f'{prefix}.{run_dir.name}')
    plot(runs, f'{prefix}.png')
    print(f'wrote {prefix}.png and the tables beside it')
    return 0


if __name__ == '__main__':
    run_cli(main, prog='learning_curve.py')
