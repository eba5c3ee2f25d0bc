"""tools/learning_curve.py: every snapshot evaluated in-process, the results kept and reused, table, CSV, plot."""

import json
import os
import shutil

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
        == '| step | minutes | SynthFonts acc. % | SynthFonts 1-NED % | SynthWords acc. % | SynthWords 1-NED % |'
    )
    rows = [line.split(' | ') for line in table[2:]]
    assert [r[0] for r in rows] == ['| 10', '| 20']  # by step, not by name
    assert rows[0][2:] == rows[1][2:]  # the same weights: the same accuracies
    assert 0 < float(rows[0][4]) <= 100  # the shipped model reads some rendered words
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
