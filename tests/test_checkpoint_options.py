"""Checkpoints whose hyper-parameters ask for an option of the original that is not implemented are refused by
name; training-only options load with a warning (spec §1.5, §7)."""

import logging

import pytest
import torch

from strhub.models import CheckpointError, load_from_checkpoint
from strhub.models.checkpoint import export_checkpoint, read_checkpoint

# The original's options that change the network, and the only values implemented (spec §1.5, model/vl4str.yaml).
UNSUPPORTED = {'cross_token_embeding': False, 'use_share_dim': True, 'clip_cls_eot_feature': False}
# Options that only change how the original trained (teacher forcing, masks in the cross branch).
TRAINING_ONLY = {'cross_gt_context': True, 'cross_cloze_mask': False}


def shipped_with(tmp_path, **hyper_parameters):
    """The shipped tiny model saved again with these extra hyper-parameters."""
    ckpt = read_checkpoint('clip4str-tiny')
    ckpt['hyper_parameters'] = {**ckpt['hyper_parameters'], **hyper_parameters}
    path = tmp_path / 'edited.ckpt'
    torch.save(ckpt, path)
    return path


def strhub_records(caplog):
    return [r for r in caplog.records if r.name.startswith('strhub')]


@pytest.mark.parametrize('key', sorted(UNSUPPORTED))
def test_unsupported_option_is_refused_by_name(tmp_path, key):
    value = not UNSUPPORTED[key]
    path = shipped_with(tmp_path, **{key: value})
    message = f'{path}: {key}={value!r} is not supported (only {UNSUPPORTED[key]!r})'
    with pytest.raises(CheckpointError) as info:
        load_from_checkpoint(path)
    assert str(info.value) == message
    with pytest.raises(CheckpointError, match='is not supported'):  # nor exported as an inference copy
        export_checkpoint(path, tmp_path / 'copy.ckpt')
    assert not (tmp_path / 'copy.ckpt').exists()


def test_the_implemented_values_load(tmp_path, caplog):
    path = shipped_with(tmp_path, **UNSUPPORTED, **TRAINING_ONLY)
    with caplog.at_level(logging.WARNING, logger='strhub'):
        system = load_from_checkpoint(path)
    assert not system.training and not strhub_records(caplog)


@pytest.mark.parametrize('key', sorted(TRAINING_ONLY))
def test_training_only_option_loads_with_a_warning(tmp_path, caplog, key):
    value = not TRAINING_ONLY[key]
    path = shipped_with(tmp_path, **{key: value})
    with caplog.at_level(logging.WARNING, logger='strhub'):
        system = load_from_checkpoint(path)
    assert [r.getMessage() for r in strhub_records(caplog)] == [
        f'{path} was trained with {key}={value!r}; fine-tuning here uses {TRAINING_ONLY[key]!r}'
    ]
    reference = load_from_checkpoint('clip4str-tiny')
    images = torch.randn(2, 3, *system.hparams.img_size)
    with torch.no_grad():
        torch.testing.assert_close(system(images), reference(images), rtol=0, atol=0)  # inference is unaffected
