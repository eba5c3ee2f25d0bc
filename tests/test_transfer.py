"""Loading a checkpoint into another shape for fine-tuning (strhub.models.transfer): charset rows matched by
character, position queries by position, the visual position embedding resized; anything else one clear error."""

import pytest
import torch
from hydra.utils import instantiate

from strhub.data.utils import Tokenizer
from strhub.models.checkpoint import model_state_dict, read_checkpoint
from strhub.models.serialization import WeightsMismatchError
from strhub.models.transfer import transfer_weights
from strhub.pretrained import pretrained_path

OLD = '0123456789abcdefghijklmnopqrstuvwxyz'
# Reordered, 'q' dropped, upper case and Greek added.
NEW = 'zyxwvutsrponmlkjihgfedcba9876543210' + 'ABCDEFGHIJKLMNOPQRSTUVWXYZ' + 'αβγδεζηθλμπσω'
DECODERS = ('model.visual_decoder', 'model.cross_decoder')


def _fresh(compose_config, *overrides):
    torch.manual_seed(0)
    return instantiate(compose_config(['+experiment=clip4str-tiny', *overrides]).model)


def _shipped():
    ckpt = read_checkpoint(pretrained_path('clip4str-tiny'))
    return model_state_dict(ckpt, 'clip4str-tiny'), ckpt['hyper_parameters']


def test_charset_length_and_image_size_change(compose_config):
    weights, hparams = _shipped()
    assert hparams['charset_train'] == OLD
    model = _fresh(
        compose_config,
        f"model.charset_train='{NEW}'",  # quoted: Hydra's grammar takes non-ASCII only in quotes
        'model.max_label_length=30',
        'model.img_size=[32,256]',
    )
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    report = transfer_weights(model, weights, hparams, 'clip4str-tiny')
    own = model.state_dict()
    old_ids, new_ids = (dict((t, i) for i, t in enumerate(Tokenizer(c).tokens)) for c in (OLD, NEW))
    for prefix in DECODERS:
        for key in ('head.weight', 'head.bias', 'text_embed.embedding.weight'):
            new, old, init = own[f'{prefix}.{key}'], weights[f'{prefix}.{key}'], fresh[f'{prefix}.{key}']
            for token, i in new_ids.items():
                if i >= len(new):
                    continue  # the heads have no [B] and [P]
                if token in old_ids:  # by character, whatever its index: exact
                    assert torch.equal(new[i], old[old_ids[token]].to(new.dtype)), (key, token)
                else:  # a new character starts as the fresh model does
                    assert torch.equal(new[i], init[i]), (key, token)
        queries = own[f'{prefix}.pos_queries']
        assert queries.shape[1] == 31
        assert torch.equal(queries[:, :26], weights[f'{prefix}.pos_queries'].to(queries.dtype))
        assert torch.equal(queries[:, 26:], fresh[f'{prefix}.pos_queries'][:, 26:])
    # Everything else unchanged.
    assert torch.equal(
        own['model.clip_model.transformer.resblocks.0.mlp.c_fc.weight'],
        weights['model.clip_model.transformer.resblocks.0.mlp.c_fc.weight'].float(),
    )
    # The patch grid 1x16 -> 1x32: class token kept, the interpolation keeps the ends of the row.
    pos, old_pos = (
        own['model.clip_model.visual.positional_embedding'],
        weights['model.clip_model.visual.positional_embedding'],
    )
    assert pos.shape == (33, 128)
    assert torch.equal(pos[0], old_pos[0].float())
    assert (pos[1:].mean(0) - old_pos[1:].float().mean(0)).abs().max() < 0.05
    assert report == [
        'model.clip_model.visual.positional_embedding: patch grid 1x16 resized to 1x32 (bicubic)',
        *[
            line
            for prefix in DECODERS
            for line in (
                f'{prefix}.pos_queries: 26 positions copied, 5 added',
                f'{prefix}.text_embed.embedding.weight: 35 characters copied, 39 added, 1 dropped',
                f'{prefix}.head.weight: 35 characters copied, 39 added, 1 dropped',
            )
        ],
    ], report


def test_same_shape_is_exact_and_nothing_reported(compose_config):
    weights, hparams = _shipped()
    model = _fresh(compose_config)
    assert transfer_weights(model, weights, hparams, 'clip4str-tiny') == []
    own = model.state_dict()
    assert all(torch.equal(own[k], v.to(own[k].dtype)) for k, v in weights.items())


def test_unmappable_changes_are_one_clear_error(compose_config):
    weights, hparams = _shipped()
    model = _fresh(compose_config, 'model.charset_train=abc')
    with pytest.raises(WeightsMismatchError, match='records no charset_train to map it by'):
        transfer_weights(model, weights, None, 'old.pt')
    model = _fresh(compose_config, 'model.dec_mlp_ratio=2')
    with pytest.raises(WeightsMismatchError, match=r'linear1\.weight: checkpoint \(512, 128\), model \(256, 128\)'):
        transfer_weights(model, weights, hparams, 'clip4str-tiny')
