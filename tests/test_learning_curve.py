"""tools/learning_curve.py: every snapshot evaluated in-process, the results kept and reused, table, CSV, plot."""

import json
import os
import shutil

import pytest

from torch.utils.tensorboard import SummaryWriter

from helpers import load_tool
from strhub.pretrained import pretrained_path


def test_learning_curve(tmp_path, synthetic_root, capsys):
    run = tmp_path / 'run'
    steps = run / 'checkpoints' / 'steps'
    steps.mkdir(parents=True)
    with SummaryWriter(str(run)) as writer:  # the run's start: its first TensorBoard event
        writer.add_scalar('loss', 1.0, 0)
    for step in (20, 10):
        shutil.copy(pretrained_path('clip4str-tiny'), steps / f'step={step}.ckpt')
    tool = load_tool('learning_curve')
    args = [str(run), '--data_root', str(synthetic_root), '--batch_size', '8']
    tool.main(args)
    table = (run / 'learning_curve.md').read_text().splitlines()
    assert (
        table[0]
        == '| step | minutes | SynthFonts acc. % | SynthFonts 1-NED % | SynthPlain acc. % | SynthPlain 1-NED % '
        '| SynthWords acc. % | SynthWords 1-NED % |'
    )
    rows = [line.split(' | ') for line in table[2:]]
    assert [r[0] for r in rows] == ['| 10', '| 20']  # by step, not by name
    assert rows[0][2:] == rows[1][2:]  # the same weights: the same accuracies
    assert 0 < float(rows[0][6]) <= 100  # the shipped model reads some rendered words
    assert (run / 'learning_curve.csv').is_file() and (run / 'learning_curve.png').stat().st_size > 0
    kept = json.loads((steps / 'step=10.ckpt.test.json').read_text())
    assert kept['sets']['SynthWords']['num_samples'] == 16

    # Kept results are reused (no model is loaded for them): a snapshot made unloadable is not read again.
    for ckpt in steps.glob('*.ckpt'):
        mtime = ckpt.stat().st_mtime
        ckpt.write_bytes(b'not a checkpoint')
        os.utime(ckpt, (mtime, mtime))
    capsys.readouterr()
    tool.main(args)
    assert (run / 'learning_curve.md').read_text().splitlines() == table


def test_learning_curves_of_two_runs_and_the_results_table(tmp_path, synthetic_root, capsys):
    """Two runs in one plot, a table per run; tools/results_table.py puts test.py outputs side by side."""
    runs = []
    for name in ('finetuned', 'scratch'):
        run = tmp_path / name
        (run / 'checkpoints' / 'steps').mkdir(parents=True)
        with SummaryWriter(str(run)) as writer:
            writer.add_scalar('loss', 1.0, 0)
        shutil.copy(pretrained_path('clip4str-tiny'), run / 'checkpoints' / 'steps' / 'step=5.ckpt')
        runs.append(str(run))
    tool = load_tool('learning_curve')
    prefix = tmp_path / 'out' / 'curve'
    tool.main([*runs, '--data_root', str(synthetic_root), '--batch_size', '8', '--out_prefix', str(prefix)])
    for name in ('finetuned', 'scratch'):
        assert (tmp_path / 'out' / f'curve.{name}.md').read_text().startswith('| step | minutes | SynthFonts')
    assert (tmp_path / 'out' / 'curve.png').stat().st_size > 0
    with pytest.raises(SystemExit):  # several runs need an output prefix
        tool.main([*runs, '--data_root', str(synthetic_root)])
    # --sets: only those sets (the kept results of all sets are not taken for them)
    only = tmp_path / 'out' / 'only'
    tool.main(
        [
            runs[0],
            '--data_root',
            str(synthetic_root),
            '--batch_size',
            '8',
            '--out_prefix',
            str(only),
            '--sets',
            'SynthWords',
        ]
    )
    assert (
        only.with_suffix('.md').read_text().splitlines()[0]
        == '| step | minutes | SynthWords acc. % | SynthWords 1-NED % |'
    )

    results = []
    for name, sets in (('a', {'X': 50.0, 'Y': 25.0}), ('b', {'Y': 100.0})):
        path = tmp_path / f'{name}.json'
        path.write_text(
            json.dumps({'sets': {s: {'accuracy': acc, 'one_minus_ned': acc / 2 + 50} for s, acc in sets.items()}})
        )
        results.append(str(path))
    capsys.readouterr()
    load_tool('results_table').main([*results, '--labels', 'before', 'after', '--out', str(tmp_path / 't' / 't.md')])
    table = [
        '| | X | Y |',
        '|---|---:|---:|',
        '| before | 50.00 (75.00) | 25.00 (62.50) |',
        '| after |  | 100.00 (100.00) |',
    ]
    assert capsys.readouterr().out.splitlines()[1:] == table
    assert (tmp_path / 't' / 't.md').read_text().splitlines() == table
    load_tool('results_table').main([*results, '--labels', 'before', 'after', '--transpose'])
    assert capsys.readouterr().out.splitlines()[1:] == [
        '| test set | before | after |',
        '|---|---:|---:|',
        '| X | 50.00 (75.00) |  |',
        '| Y | 25.00 (62.50) | 100.00 (100.00) |',
    ]
    (tmp_path / 'bad.json').write_text('{"not": "results"}')
    table_tool = load_tool('results_table')
    with pytest.raises(SystemExit) as e:
        table_tool.run_cli(table_tool.main, [str(tmp_path / 'bad.json')], prog='results_table.py')
    assert e.value.code == 2 and 'is not a tools/test.py --out JSON file' in capsys.readouterr().err


def test_training_time_leaves_out_the_pause_of_a_resumed_run(tmp_path):
    """A resumed run writes a second event file; the time between the two sessions is not training."""
    for start, end, suffix in ((1000.0, 1600.0, '.a'), (5000.0, 5300.0, '.b')):  # 10 minutes, a pause, 5 minutes
        with SummaryWriter(str(tmp_path), filename_suffix=suffix) as writer:
            writer.add_scalar('loss', 1.0, 0, walltime=start)
            writer.add_scalar('loss', 0.5, 1, walltime=end)
    tool = load_tool('learning_curve')
    segments = tool.training_segments(tmp_path)
    assert segments == [(1000.0, 1600.0), (5000.0, 5300.0)]
    assert tool.training_minutes(segments, 1300.0) == 5.0  # in the first session
    assert tool.training_minutes(segments, 5300.0) == 15.0  # 10 + 5, not the 71 minutes since the start
    with pytest.raises(tool.CLIError, match='no TensorBoard events'):
        tool.training_segments(tmp_path / 'empty')
