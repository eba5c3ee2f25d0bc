"""The full-size variants have exactly the parameter counts of the original (spec §11). They are built from their
experiment configs on the meta device: shapes only, no memory, a fraction of a second each."""

import pytest
import torch
from hydra.utils import instantiate

# Spec §11: CLIP total, visual tower, text blocks, token embedding, one decoder, total, trainable, frozen.
SPEC = {
    'clip4str-b16': (149_620_737, 86_192_640, 37_828_608, 25_296_896, 4_317_791, 158_256_319, 114_005_694, 44_250_625),
    'clip4str-b32': (151_277_313, 87_849_216, 37_828_608, 25_296_896, 4_317_791, 159_912_895, 115_662_270, 44_250_625),
    'clip4str-l14': (427_616_513, 303_966_208, 85_054_464, 37_945_344, 9_622_367, 446_861_247, 366_329_534, 80_531_713),
    'clip4str-h14': (
        986_109_441,
        632_076_800,
        302_309_376,
        50_593_792,
        17_024_095,
        1_020_157_631,
        893_907_646,
        126_249_985,
    ),
}


def count(params) -> int:
    return sum(p.numel() for p in params)


@pytest.mark.parametrize('experiment', sorted(SPEC))
def test_parameter_counts(experiment, compose_config):
    config = compose_config([f'+experiment={experiment}', 'model.clip_pretrained=null'])
    with torch.device('meta'):
        system = instantiate(config.model)
    params = list(system.parameters())
    assert {p.device.type for p in params} == {'meta'}
    clip = system.model.clip_model
    counts = (
        count(clip.parameters()),
        count(clip.visual.parameters()),
        count(clip.transformer.parameters()),
        count(clip.token_embedding.parameters()),
        count(system.model.visual_decoder.parameters()),
        count(params),
        count(p for p in params if p.requires_grad),
        count(p for p in params if not p.requires_grad),
    )
    assert counts == SPEC[experiment]
    assert count(system.model.cross_decoder.parameters()) == SPEC[experiment][4]
    # Frozen (text_freeze_nlayer 6): token embedding + text position embedding (77 x width) + logit_scale + blocks 0-5.
    blocks = clip.transformer.resblocks
    assert counts[-1] == counts[3] + 77 * clip.ln_final.weight.numel() + 1 + count(blocks[:6].parameters())
