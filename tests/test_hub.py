"""Released checkpoints by name (``$CLIP4STR_CHECKPOINTS``), the torch.hub entry points of ``hubconf.py``, and
``tools/convert_checkpoint.py``: all on small files the tests write under the released file names."""

import importlib.util
import re
import shutil
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from helpers import REPO, SMALL_MODEL, load_tool
from hydra.utils import instantiate
from torch.utils.data import DataLoader

from strhub.models import CheckpointError, load_from_checkpoint
from strhub.pretrained import CHECKPOINTS, ENV_VAR, pretrained_path
from _cli import CLIError, resolve_checkpoint

B16 = CHECKPOINTS['clip4str-base16x16'].file  # clip4str_base16x16_d70bde1f2d.ckpt
DFN5B = CHECKPOINTS['clip4str-huge14x14-dfn5b'].file  # a 2024 plain state dict: clip4str_huge_3e942729b1.pt


@pytest.fixture
def releases(tmp_path, monkeypatch) -> Path:
    """``$CLIP4STR_CHECKPOINTS`` holding the shipped tiny model under the B/16 release's name, the working directory
    elsewhere."""
    folder = tmp_path / 'releases'
    folder.mkdir()
    shutil.copy(pretrained_path('clip4str-tiny'), folder / B16)
    monkeypatch.setenv(ENV_VAR, str(folder))
    (tmp_path / 'work').mkdir()
    monkeypatch.chdir(tmp_path / 'work')
    return folder


def _images(img_size=(32, 128)) -> torch.Tensor:
    return torch.rand(2, 3, *img_size, generator=torch.Generator().manual_seed(0)) * 2 - 1


@torch.inference_mode()
def _logits(model) -> torch.Tensor:
    return model(_images(model.hparams.img_size))


def test_every_name_has_an_entry_point_with_a_docstring():
    spec = importlib.util.spec_from_file_location('_hubconf', REPO / 'hubconf.py')
    hub = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hub)
    # What torch.hub.list shows: the public callables.
    entries = {n for n in dir(hub) if callable(getattr(hub, n)) and not n.startswith('_')}
    assert entries == {name.replace('-', '_') for name in CHECKPOINTS}
    for name, ckpt in CHECKPOINTS.items():
        assert ckpt.about in getattr(hub, name.replace('-', '_')).__doc__
    assert all(isinstance(d, str) for d in hub.dependencies)


def test_torch_hub_load_local_reads_the_release_from_the_env_folder(releases):
    model = torch.hub.load(str(REPO), 'clip4str_base16x16', source='local')
    assert not model.training
    assert torch.equal(_logits(model), _logits(load_from_checkpoint('clip4str-tiny')))
    # **kwargs reach load_from_checkpoint; checkpoint= loads another file.
    assert torch.hub.load(str(REPO), 'clip4str_base16x16', source='local', refine_iters=0).hparams.refine_iters == 0
    other = torch.hub.load(str(REPO), 'clip4str_large14x14', source='local', checkpoint=str(releases / B16))
    assert torch.equal(_logits(other), _logits(model))


def test_torch_hub_pretrained_false_builds_the_architecture():
    random = torch.hub.load(str(REPO), 'clip4str_tiny', source='local', pretrained=False, dropout=0.0)
    shipped = torch.hub.load(str(REPO), 'clip4str_tiny', source='local')
    assert {k: v.shape for k, v in random.state_dict().items()} == {k: v.shape for k, v in shipped.state_dict().items()}
    assert not random.training
    with pytest.raises(ValueError, match='checkpoint=.* is for pretrained=True'):
        torch.hub.load(str(REPO), 'clip4str_tiny', source='local', pretrained=False, checkpoint='x.ckpt')


def test_a_release_name_resolves_in_the_env_folder_then_the_working_directory(releases, monkeypatch):
    for name in ('clip4str-base16x16', 'clip4str_base16x16', B16):
        assert pretrained_path(name) == releases / B16
        assert resolve_checkpoint(name) == releases / B16
    # Shipped names take either spelling as well.
    assert pretrained_path('clip4str_tiny') == pretrained_path('clip4str-tiny')
    monkeypatch.delenv(ENV_VAR)
    shutil.move(releases / B16, B16)
    assert pretrained_path('clip4str-base16x16') == Path(B16)
    assert isinstance(load_from_checkpoint('clip4str-base16x16'), pl.LightningModule)


def test_a_2024_state_dict_release_loads_by_name(releases):
    shipped = torch.load(releases / B16, map_location='cpu', weights_only=True)
    # The 2024 releases: the original's key names, no hyper-parameters.
    torch.save({k[len('model.') :]: v for k, v in shipped['state_dict'].items()}, releases / DFN5B)
    charset = shipped['hyper_parameters']['charset_train']
    model = load_from_checkpoint('clip4str_huge14x14_dfn5b', charset_train=charset)
    for k, v in shipped['state_dict'].items():
        assert torch.equal(model.state_dict()[k], v.float()), k


def test_a_missing_release_names_the_file_the_folder_and_the_variable(releases, monkeypatch):
    (releases / B16).unlink()
    message = rf'{B16} \(from .*\) is neither in {ENV_VAR}={re.escape(str(releases))} nor in the working directory '
    message += re.escape(str(Path.cwd()))
    with pytest.raises(CheckpointError, match=message + rf'.*export {ENV_VAR}=DIR'):
        load_from_checkpoint('clip4str-base16x16')
    with pytest.raises(CLIError, match=message):
        resolve_checkpoint(B16)
    with pytest.raises(CheckpointError, match=message):
        torch.hub.load(str(REPO), 'clip4str_base16x16', source='local')
    monkeypatch.delenv(ENV_VAR)
    with pytest.raises(CheckpointError, match=rf'neither in {ENV_VAR} \(not set\)'):
        load_from_checkpoint('clip4str-base16x16')
    # An unknown name lists the known ones; a missing file elsewhere is only that.
    with pytest.raises(CheckpointError, match=r'nor a shipped model: clip4str-tiny; released: clip4str-base16x16, '):
        load_from_checkpoint('clip4str-nonexistent')
    with pytest.raises(CheckpointError, match=r'checkpoint not found: elsewhere/clip4str_base16x16_d70bde1f2d\.ckpt$'):
        load_from_checkpoint(f'elsewhere/{B16}')


def test_a_path_wins_over_a_release_name(releases):
    Path(B16).write_bytes(b'not a checkpoint')  # in the working directory
    assert pretrained_path(B16) is None
    with pytest.raises(CheckpointError, match=f'cannot read checkpoint {B16}'):
        load_from_checkpoint(B16)
    Path('clip4str-base16x16').mkdir()
    assert pretrained_path('clip4str-base16x16') is None
    assert pretrained_path('clip4str_base16x16') == releases / B16


@pytest.fixture
def training_checkpoint(tmp_path, compose_config) -> Path:
    """A Lightning checkpoint of one training step of the smallest model (optimizer and loop state included)."""
    torch.manual_seed(0)
    model = instantiate(compose_config(SMALL_MODEL).model)
    images = _images(model.hparams.img_size)
    loader = DataLoader(list(zip(images, ['hello', 'tiny'])), batch_size=2)
    trainer = pl.Trainer(
        accelerator='cpu',
        devices=1,
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, loader)
    trainer.save_checkpoint(tmp_path / 'last.ckpt')
    return tmp_path / 'last.ckpt'


def test_convert_checkpoint_keeps_the_outputs_in_a_smaller_file(tmp_path, training_checkpoint, capsys):
    convert = load_tool('convert_checkpoint')
    fp32, fp16 = tmp_path / 'release_fp32.ckpt', tmp_path / 'release.pt'
    assert convert.main([str(training_checkpoint), str(fp32), '--fp32']) == 0
    assert convert.main([str(training_checkpoint), str(fp16)]) == 0
    assert f'wrote {fp16}' in capsys.readouterr().out
    size = training_checkpoint.stat().st_size
    assert fp32.stat().st_size < size and fp16.stat().st_size < 0.6 * size
    assert 'optimizer_states' in torch.load(training_checkpoint, weights_only=True)
    assert set(torch.load(fp16, weights_only=True)) == {'system', 'state_dict', 'hyper_parameters', 'openai_meanstd'}

    expected = _logits(load_from_checkpoint(training_checkpoint))
    assert torch.equal(_logits(load_from_checkpoint(fp32)), expected)
    torch.testing.assert_close(_logits(load_from_checkpoint(fp16)), expected, rtol=1e-3, atol=1e-3)
