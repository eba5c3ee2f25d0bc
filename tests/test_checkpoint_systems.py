"""A checkpoint records which model built it, and loading dispatches on that (or on the keys of a release)."""

import pytest
import torch

from strhub.models import CheckpointError, load_from_checkpoint
from strhub.models.checkpoint import export_checkpoint, read_checkpoint
from strhub.models.clip4str.system import CLIP4STRSystem


@pytest.fixture(scope='module')
def shipped() -> dict:
    return read_checkpoint('clip4str-tiny')


def test_exported_checkpoint_records_its_system(tmp_path, shipped):
    out = export_checkpoint('clip4str-tiny', tmp_path / 'tiny.ckpt')
    assert torch.load(out, weights_only=True)['system'] == 'clip4str'
    assert isinstance(load_from_checkpoint(out), CLIP4STRSystem)


def test_unknown_or_unsupported_systems_are_named(tmp_path, shipped):
    unknown = tmp_path / 'unknown.ckpt'
    torch.save({**shipped, 'system': 'abinet'}, unknown)
    with pytest.raises(CheckpointError, match=r"unknown\.ckpt holds a 'abinet' model; known: clip4str"):
        load_from_checkpoint(unknown)
    # The original's STR-Adapter variant has CLIP4STR's decoder keys but is another model.
    adapter = tmp_path / 'adapter.ckpt'
    unnamed = {k: v for k, v in shipped.items() if k != 'system'}  # recognised by its keys, as the original's files
    torch.save({**unnamed, 'hyper_parameters': {**shipped['hyper_parameters'], 'name': 'str_adapter'}}, adapter)
    with pytest.raises(
        CheckpointError, match=r"not a checkpoint of a known model \(hyper_parameters name='str_adapter'"
    ):
        load_from_checkpoint(adapter)


def test_released_names_without_a_system_record_load(tmp_path, shipped):
    # The original's releases: no 'system', its key names (clip_model.*, visual_decoder.*), no hyper-parameters.
    sd = {k[len('model.') :]: v for k, v in shipped['state_dict'].items()}
    released = tmp_path / 'clip4str_base_release.pt'
    torch.save(sd, released)
    model = load_from_checkpoint(released, charset_train=shipped['hyper_parameters']['charset_train'])
    for k, v in shipped['state_dict'].items():
        assert torch.equal(model.state_dict()[k], v.float()), k
