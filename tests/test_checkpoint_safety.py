"""No code runs from a checkpoint or CLIP file unless the user says the file is trusted."""

import os
import subprocess
import sys
import zipfile
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from strhub.models import CheckpointError, load_from_checkpoint
from strhub.models.checkpoint import export_checkpoint, read_checkpoint
from strhub.models.clip import CLIPArch, CLIPWeightsError, build_clip, load_clip, read_clip_state_dict
from strhub.models.serialization import DiscardedObject, torchscript_state_dict
from strhub.read import TextReader
from _cli import CLIError
from helpers import REPO, load_tool

ENV = {**os.environ, 'OMP_NUM_THREADS': '1'}
TINY_ARCH = CLIPArch(
    embed_dim=32,
    image_size=(32, 32),
    patch_size=(16, 16),
    vision_width=64,
    vision_layers=1,
    text_width=64,
    text_layers=1,
    context_length=16,
    vocab_size=100,
)


class Payload:
    """Unpickles as ``eval(...)`` creating ``marker``: what a hostile checkpoint would do, harmlessly."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return eval, (f'__import__("pathlib").Path({str(self.marker)!r}).touch()',)


@pytest.fixture(scope='module')
def shipped() -> dict:
    return read_checkpoint('clip4str-tiny')


@pytest.fixture
def hostile(tmp_path, shipped):
    """A working checkpoint (the shipped model's) that also runs code when unpickled in full, and its marker."""
    marker = tmp_path / 'code_ran'
    path = tmp_path / 'hostile.ckpt'
    torch.save({**shipped, 'extra': Payload(marker)}, path)
    return path, marker


def test_every_entry_point_refuses_a_hostile_checkpoint(hostile, tmp_path, png_bytes):
    path, marker = hostile
    image = tmp_path / 'word.png'
    image.write_bytes(png_bytes())
    (tmp_path / 'data' / 'test').mkdir(parents=True)
    attempts = {
        'read_checkpoint': lambda: read_checkpoint(path),
        'load_from_checkpoint': lambda: load_from_checkpoint(path),
        'TextReader': lambda: TextReader(path, device='cpu'),
        'export_checkpoint': lambda: export_checkpoint(path, tmp_path / 'out.ckpt'),
        'read.py': lambda: load_tool('read').main([str(path), str(image)]),
        'test.py': lambda: load_tool('test').main([str(path), '--data_root', str(tmp_path / 'data')]),
    }
    for name, attempt in attempts.items():
        with pytest.raises((CheckpointError, CLIError)) as e:
            attempt()
        message = str(e.value)
        assert 'builtins.eval' in message and str(path) in message and 'trust' in message, (name, message)
        assert not marker.exists(), name
    assert not (tmp_path / 'out.ckpt').exists()

    # The command lines: one line on stderr, no traceback, nothing run.
    for cmd in (
        [sys.executable, 'tools/export.py', str(path), str(tmp_path / 'out.ckpt')],
        [sys.executable, 'tools/read.py', str(path), str(image)],
    ):
        proc = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
        assert proc.returncode != 0 and 'builtins.eval' in proc.stderr and 'Traceback' not in proc.stderr, proc.stderr
        assert not marker.exists(), cmd


def test_training_refuses_a_hostile_checkpoint(hostile, tmp_path, synthetic_root):
    path, marker = hostile
    for key in ('pretrained', 'ckpt_path'):
        cmd = [
            sys.executable,
            'tools/train.py',
            '+experiment=clip4str-tiny',
            f'data.root_dir={synthetic_root}',
            'data.num_workers=0',
            'trainer.max_steps=2',
            f'{key}={path}',
            f'hydra.run.dir={tmp_path / key}',
        ]
        proc = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
        assert proc.returncode != 0 and 'eval' in proc.stderr, (key, proc.stderr[-3000:])
        assert not marker.exists(), key


def test_trusted_checkpoint_loads_in_full(hostile):
    path, marker = hostile
    model = load_from_checkpoint(path, trust=True)
    assert marker.exists()  # the opt-in does what it says
    assert model.hparams.charset_train


def test_checkpoint_of_older_pytorch_and_lightning_loads_safely(tmp_path, shipped):
    # PyTorch < 2.4 pickled OneCycleLR's bound anneal_func (so the scheduler and its optimizer) into the scheduler
    # state; Lightning 1.x stored hyper-parameters as an AttributeDict and metric reducers (torch.mean) in its loops.
    # These are rebuilt here under the names such checkpoints use.
    from pytorch_lightning.utilities.parsing import AttributeDict

    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.AdamW([weight], lr=1e-3)
    weight.sum().backward()
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1e-3, total_steps=10)
    old = {
        'epoch': 3,
        'global_step': 100,
        'pytorch-lightning_version': '1.6.5',
        'state_dict': OrderedDict(shipped['state_dict']),
        'hyper_parameters': AttributeDict(shipped['hyper_parameters']),
        'optimizer_states': [optimizer.state_dict()],
        'lr_schedulers': [{**scheduler.state_dict(), 'anneal_func': scheduler._anneal_func}],
        'loops': {'fit_loop': {'epoch_loop._results': {'loss': {'meta': {'reduce_fx': torch.mean}}}}},
    }
    path = tmp_path / 'old.ckpt'
    torch.save(old, path)
    with zipfile.ZipFile(path) as z:
        pickled = z.read(next(n for n in z.namelist() if n.endswith('data.pkl')))
    for name in (b'getattr', b'OneCycleLR', b'AdamW', b'AttributeDict', b'mean'):
        assert name in pickled  # the test file really holds what such checkpoints hold

    ckpt = read_checkpoint(path)
    assert type(ckpt['hyper_parameters']) is dict and ckpt['hyper_parameters'] == dict(shipped['hyper_parameters'])
    assert isinstance(ckpt['lr_schedulers'][0]['anneal_func'], DiscardedObject)
    assert isinstance(ckpt['loops']['fit_loop']['epoch_loop._results']['loss']['meta']['reduce_fx'], DiscardedObject)
    model = load_from_checkpoint(path)
    for k, v in shipped['state_dict'].items():
        assert torch.equal(model.state_dict()[k], v.to(model.state_dict()[k].dtype)), k


def test_unreadable_checkpoints_are_one_line_errors(tmp_path, shipped):
    listed = tmp_path / 'list.ckpt'
    torch.save([1, 2, 3], listed)
    with pytest.raises(CheckpointError, match=r'list\.ckpt is not a checkpoint: it holds a list'):
        read_checkpoint(listed)
    good = tmp_path / 'good.ckpt'
    torch.save(shipped, good)
    truncated = tmp_path / 'truncated.ckpt'
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r'cannot read checkpoint .*truncated\.ckpt.*truncated or not a checkp'):
        read_checkpoint(truncated)


def test_export_writes_atomically_and_checks_the_destination(tmp_path):
    blocker = tmp_path / 'a_file'
    blocker.write_text('not a folder')
    proc = subprocess.run(
        [sys.executable, 'tools/export.py', 'clip4str-tiny', str(blocker / 'out.ckpt')],
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2 and 'cannot write' in proc.stderr and str(blocker) in proc.stderr, proc.stderr
    assert 'Traceback' not in proc.stderr
    out = export_checkpoint('clip4str-tiny', tmp_path / 'tiny.ckpt')
    assert sorted(p.name for p in tmp_path.iterdir()) == ['a_file', 'tiny.ckpt']  # no temporary left
    assert load_from_checkpoint(out).hparams.charset_train


def test_clip_weights_load_safely(tmp_path, monkeypatch):
    clip = build_clip(TINY_ARCH).eval()
    # A plain state dict that also runs code: refused, naming the type and the opt-in.
    marker = tmp_path / 'code_ran'
    hostile = tmp_path / 'hostile_clip.pt'
    torch.save({**clip.state_dict(), 'extra': Payload(marker)}, hostile)
    with pytest.raises(CLIPWeightsError, match=r'builtins\.eval.*trust'):
        read_clip_state_dict(hostile)
    assert not marker.exists()

    # An OpenAI-style TorchScript archive: its tensors are read without compiling its code (torch.jit.load is not
    # called), and equal what torch.jit.load(...).state_dict() gives.
    archive = tmp_path / 'ViT-tiny.pt'
    traced = torch.jit.trace(clip, (torch.randn(1, 3, 32, 32), torch.randint(0, 100, (1, 16))), check_trace=False)
    traced.save(str(archive))
    expected = torch.jit.load(str(archive)).state_dict()
    with monkeypatch.context() as m:
        m.setattr(torch.jit, 'load', lambda *a, **k: pytest.fail('torch.jit.load called without trust'))
        state = torchscript_state_dict(archive)
        loaded = load_clip(archive, TINY_ARCH)
    assert state.keys() == expected.keys()
    for k, v in expected.items():
        assert state[k].dtype == v.dtype and torch.equal(state[k], v), k
    for k, v in clip.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v.half().float()), k  # the fp16 round trip of load_clip
