"""Training never loses or hides what the user did: atomic checkpoints, up-front checks, where a run writes."""

import argparse
import time

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import open_dict

from strhub.models.systems import CLIP4STR
from strhub.training import (
    AtomicCheckpointIO,
    TrainingSetupError,
    check_checkpoint_file,
    check_values,
    choose_run_dir,
    run_training,
)
from test_training import TINY, run_train, start_train, wait_for_checkpoint

# Runs the script in argv[1:] with torch.save made slow, as onto a slow filesystem: a checkpoint trickles out over
# a second or two, so that a test can kill the run in the middle of a save.
SLOW_SAVE = """
import io, runpy, sys, time
import torch
save = torch.save
def slow_save(obj, f, *args, **kwargs):
    buffer = io.BytesIO()
    save(obj, buffer, *args, **kwargs)
    data = buffer.getvalue()
    for i in range(0, len(data), 1 << 20):
        f.write(data[i : i + (1 << 20)])
        f.flush()
        time.sleep(0.1)
torch.save = slow_save
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name='__main__')
"""


def test_kill_during_a_save_keeps_the_previous_checkpoint(tmp_path, synthetic_root):
    run, args = (
        tmp_path / 'run',
        (f'data.root_dir={synthetic_root}', 'trainer.max_steps=12', 'trainer.val_check_interval=4'),
    )
    last = run / 'checkpoints' / 'last.ckpt'
    with open(tmp_path / 'killed.log', 'w') as out:
        proc = start_train(run, *args, log=out, wrapper=('-c', SLOW_SAVE))
        try:
            saved = wait_for_checkpoint(proc, last, 4)
            deadline, partial = time.time() + 300, []
            while not partial and time.time() < deadline and proc.poll() is None:
                partial = [p for p in last.parent.glob('.last.ckpt.tmp-*') if p.stat().st_size > 0]
                time.sleep(0.01)
            assert partial, 'no save of last.ckpt seen after the first'
            proc.kill()  # SIGKILL in the middle of writing the next last.ckpt
            proc.wait(timeout=60)
        finally:
            proc.kill()
    # The previous checkpoint is whole; the partial file lies beside it under a name nothing loads.
    assert torch.load(last, weights_only=True)['global_step'] == saved
    assert partial[0].is_file() and partial[0].stat().st_size < last.stat().st_size

    # Resuming in the same folder removes the partial file first, and the run ends as planned.
    proc = run_train(run, *args, f'ckpt_path={last}')
    assert f'removed the partial file of a killed save: {partial[0]}' in proc.stdout, proc.stdout[-2000:]
    assert f'run directory: {run} (hydra.run.dir)' in proc.stdout
    assert not list(last.parent.glob('**/.*.tmp-*'))
    assert torch.load(last, weights_only=True)['global_step'] == 12


def test_a_failed_save_leaves_the_previous_file(tmp_path, monkeypatch):
    path, io = tmp_path / 'last.ckpt', AtomicCheckpointIO()
    io.save_checkpoint({'global_step': 1}, path)

    def failing_save(obj, f, *args, **kwargs):
        f.write(b'PK partial')
        raise OSError(28, 'No space left on device')

    monkeypatch.setattr(torch, 'save', failing_save)
    with pytest.raises(OSError, match='No space left'):
        io.save_checkpoint({'global_step': 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {'global_step': 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ['last.ckpt']


def test_broken_or_unsafe_checkpoints_are_refused_up_front(tmp_path):
    good = tmp_path / 'good.ckpt'
    torch.save({'state_dict': {'w': torch.zeros(1000)}}, good)
    check_checkpoint_file('ckpt_path', good, trust=False)
    truncated, empty = tmp_path / 'truncated.ckpt', tmp_path / 'empty.ckpt'
    truncated.write_bytes(good.read_bytes()[:2000])
    empty.write_bytes(b'')
    for path, reason in ((truncated, 'File is not a zip file'), (empty, 'empty file')):
        with pytest.raises(TrainingSetupError) as e:
            check_checkpoint_file('ckpt_path', path, trust=False)
        assert str(e.value) == f'ckpt_path {path} is truncated or not a checkpoint ({reason})'
    # Resuming loads weights-only: a checkpoint that pickles other objects needs trust_checkpoint=true.
    unsafe = tmp_path / 'unsafe.ckpt'
    torch.save({'args': argparse.Namespace(lr=1)}, unsafe)
    with pytest.raises(TrainingSetupError, match=r'pickles argparse.Namespace.*trust_checkpoint=true'):
        check_checkpoint_file('ckpt_path', unsafe, trust=False)
    check_checkpoint_file('ckpt_path', unsafe, trust=True)


@pytest.mark.parametrize(
    'override, message',
    [
        ('model.batch_size=abc', "model.batch_size='abc' must be a positive integer"),
        ('model.batch_size=0', 'model.batch_size=0 must be a positive integer'),
        ('model.batch_size=12.5', 'model.batch_size=12.5 must be a positive integer'),
        ('trainer.max_steps=abc', "trainer.max_steps='abc' must be a positive integer or -1 (no limit)"),
        ('trainer.max_epochs=0', 'trainer.max_epochs=0 must be a positive integer or -1 (no limit)'),
        ('trainer.val_check_interval=2.5', 'trainer.val_check_interval=2.5 must be a positive integer (batches)'),
        ('trainer.gpus=true', 'trainer.gpus=True must be an integer >= 0 (0: CPU)'),
        ('trainer.accumulate_grad_batches=two', "trainer.accumulate_grad_batches='two' must be a positive integer"),
        ('model.lr=fast', "model.lr='fast' must be a positive number"),
        ('model.lr=0', 'model.lr=0 must be a positive number'),
        ('model.warmup_pct=1.5', 'model.warmup_pct=1.5 must be a number from 0 to 1'),
        ('seed=-1', 'seed=-1 must be an integer from 0 to 4294967295'),
        ('trust_checkpoint=no', "trust_checkpoint='no' must be true or false"),
        ('data.augment=1', 'data.augment=1 must be true or false'),
        ('stop_at_step=0', 'stop_at_step=0 must be a positive integer or null'),
        ('stop_at_step=13', 'stop_at_step=13 is past trainer.max_steps=12, where the run ends anyway'),
    ],
)
def test_config_values_are_checked_up_front(override, message, compose_config):
    with pytest.raises(TrainingSetupError) as e:
        check_values(compose_config(TINY + ['trainer.max_steps=12', override]))
    assert str(e.value).startswith(message)


def test_integral_floats_count_as_integers(compose_config):
    # Hydra reads 1e3 as a float; OneCycleLR and Lightning want integers.
    config = compose_config(TINY + ['trainer.max_steps=1e3', 'trainer.val_check_interval=2e2', 'model.batch_size=16.0'])
    check_values(config)
    assert type(config.trainer.max_steps) is int and config.trainer.max_steps == 1000
    assert type(config.trainer.val_check_interval) is int and config.trainer.val_check_interval == 200
    assert type(config.data.batch_size) is int and config.data.batch_size == 16
    config = compose_config(TINY + ['trainer.val_check_interval=0.5', 'trainer.max_epochs=null'])
    check_values(config)
    assert config.trainer.val_check_interval == 0.5


def test_where_a_resumed_run_writes(tmp_path):
    new = tmp_path / 'outputs' / 'new'
    run = tmp_path / 'runs' / 'a'
    assert choose_run_dir(None, new, given=False) == (new, 'a new run')
    # Given on the command line: always there.
    assert choose_run_dir(str(run / 'checkpoints' / 'last.ckpt'), new, given=True) == (new, 'hydra.run.dir')
    # A checkpoint of a run (or one of its step snapshots): that run goes on, as the original.
    for ckpt in (run / 'checkpoints' / 'last.ckpt', run / 'checkpoints' / 'steps' / 'step=10.ckpt'):
        where, why = choose_run_dir(str(ckpt), new, given=False)
        assert where == run and why.startswith('the run ckpt_path belongs to')
    # A loose file: a new run folder, not the file's grandparent.
    where, why = choose_run_dir(str(tmp_path / 'downloads' / 'model.ckpt'), new, given=False)
    assert where == new and "not in a run's checkpoints/ folder" in why


def test_a_failed_start_is_one_line_and_leaves_no_run_folder(tmp_path, synthetic_root):
    run = tmp_path / 'x'
    proc = run_train(run, f'data.root_dir={synthetic_root}', 'model.batch_size=abc', check=False)
    assert (
        proc.returncode == 2
        and proc.stderr.strip() == "train.py: error: model.batch_size='abc' must be a positive integer"
    )
    assert not run.exists()
    # A run folder that holds anything else is kept: here a run resumed from a checkpoint a kill truncated.
    run = tmp_path / 'run'
    last = run / 'checkpoints' / 'last.ckpt'
    last.parent.mkdir(parents=True)
    last.write_bytes(b'PK\x03\x04 cut short')
    proc = run_train(run, f'data.root_dir={synthetic_root}', f'ckpt_path={last}', check=False)
    assert proc.returncode == 2 and 'Traceback' not in proc.stderr
    assert (
        proc.stderr.strip()
        == f'train.py: error: ckpt_path {last} is truncated or not a checkpoint (File is not a zip file)'
    )
    assert last.read_bytes() == b'PK\x03\x04 cut short'


def test_pretrained_of_another_shape_names_the_parameter_and_both_shapes(tmp_path, synthetic_root, compose_config):
    # Decoders with a wider MLP: nothing maps them (a charset, length or image size change would be mapped).
    model = instantiate(compose_config(TINY + ['model.dec_mlp_ratio=2']).model)
    path = tmp_path / 'wide.ckpt'
    torch.save({'system': CLIP4STR, 'state_dict': model.state_dict(), 'hyper_parameters': dict(model.hparams)}, path)
    run = tmp_path / 'run'
    proc = run_train(run, f'data.root_dir={synthetic_root}', f'pretrained={path}', check=False)
    assert proc.returncode == 2 and 'Traceback' not in proc.stderr, proc.stderr[-3000:]
    error = proc.stderr.strip().splitlines()[-1]
    assert error.startswith(f'train.py: error: pretrained={path} does not fit the model: 6 shape mismatch: ')
    assert 'model.visual_decoder.layers.0.linear1.weight: checkpoint (128, 64), model (256, 64)' in error, error
    assert not run.exists()


def test_a_clip_file_of_another_architecture_is_a_setup_error(tmp_path, synthetic_root, compose_config):
    clip = instantiate(compose_config(TINY + ['model.clip_arch.vision_layers=2']).model).model.clip_model
    path = tmp_path / 'clip.pt'
    torch.save(clip.state_dict(), path)
    config = compose_config(
        TINY + [f'data.root_dir={synthetic_root}', f'model.clip_pretrained={path}', 'model.pos_embed_init=null']
    )
    with open_dict(config):
        config.run_dir = str(tmp_path / 'run')
    with pytest.raises(TrainingSetupError, match=r'^model: .*clip.pt is another CLIP architecture.*vision_layers'):
        run_training(config)
    # A conflicting option the model's constructor refuses: also one line naming the config group.
    config = compose_config(TINY + [f'data.root_dir={synthetic_root}', f'model.clip_pretrained={path}'])
    with open_dict(config):
        config.run_dir = str(tmp_path / 'run')
    with pytest.raises(TrainingSetupError, match='^model: pos_embed_init=sincos is for a random CLIP'):
        run_training(config)
