"""The model's own computation (cached keys/values, one text-encoder call per distinct caption) against the
straightforward one the original runs (strhub.models.clip4str.reference): the same logits, strings, losses and
gradients, for every decoding mode, decoder depth and branch set."""

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from PIL import Image

from helpers import FIXTURES, SMALL_MODEL

from strhub.data.transforms import get_transform
from strhub.models import load_from_checkpoint
from strhub.models.clip4str import reference
from strhub.models.parseq import gen_tgt_perms

SMALL = [
    *SMALL_MODEL,
    'model.perm_num=6',
    'model.dropout=0',
    'model.charset_train=abcdefghij',
]
LABELS = ['abc', 'jihgfedcba', 'a', 'bbbb', 'cafe', 'dig', 'jab', 'bad']


def build(compose_config, *overrides):
    torch.manual_seed(0)
    system = instantiate(compose_config(SMALL + list(overrides)).model)
    with torch.no_grad():  # decisive argmax margins and strings of varied lengths from random weights
        for decoder in (system.model.visual_decoder, system.model.cross_decoder):
            if decoder is not None:
                decoder.head.weight.mul_(40)
                decoder.pos_queries.mul_(20)
    return system


@pytest.fixture(scope='module')
def images():
    return torch.randn(8, 3, 32, 128, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize('depth', [1, 2])
@pytest.mark.parametrize('decode_ar', [True, False])
@pytest.mark.parametrize('refine_iters', [0, 2])
@pytest.mark.parametrize('language_model', [True, False])
def test_inference_equals_the_reference(compose_config, images, depth, decode_ar, refine_iters, language_model):
    system = build(compose_config, f'model.dec_depth={depth}', f'model.use_language_model={language_model}').eval()
    model = system.model
    model.decode_ar, model.refine_iters = decode_ar, refine_iters
    with torch.no_grad():
        for max_length in (None, 6):
            ours = model.forward_branches(images, max_length)
            theirs = reference.forward_branches(model, images, max_length)
            for a, b in zip(ours, theirs):
                assert a.shape == b.shape
                torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
            texts, probs = system.tokenizer.decode(ours[1].softmax(-1))
            ref_texts, ref_probs = system.tokenizer.decode(theirs[1].softmax(-1))
            assert texts == ref_texts
            for p, q in zip(probs, ref_probs):
                torch.testing.assert_close(p, q, rtol=0, atol=1e-6)


@pytest.mark.parametrize('decode_ar, refine_iters', [(True, 1), (True, 0), (False, 1)])
def test_the_shipped_model_reads_as_the_reference(decode_ar, refine_iters):
    # Words of 4-8 characters: rows end at different steps (the early stop and refinement's padding at work).
    system = load_from_checkpoint('clip4str-tiny', decode_ar=decode_ar, refine_iters=refine_iters)
    transform = get_transform(system.hparams.img_size)
    images = torch.stack([transform(Image.open(f).convert('RGB')) for f in sorted(FIXTURES.glob('img*.png'))])
    with torch.no_grad():
        ours = system.model.forward_branches(images)
        theirs = reference.forward_branches(system.model, images)
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    texts = system.tokenizer.decode(ours[1].softmax(-1))[0]
    assert texts == system.tokenizer.decode(theirs[1].softmax(-1))[0]
    if decode_ar:  # a model that reads, not near-ties: three of the four ('hello' as 'helo', README: "Scene-like text")
        assert sum(a == b for a, b in zip(texts, ['hello', 'clip4str', 'text', '2024ab'])) >= 3, texts


@pytest.mark.parametrize('depth', [1, 2])
@pytest.mark.parametrize('image_detach', [True, False])
def test_training_loss_and_gradients_equal_the_reference(compose_config, images, depth, image_detach):
    system = build(compose_config, f'model.dec_depth={depth}', f'model.image_detach={image_detach}').train()
    perms = gen_tgt_perms(10, 6, True, True, np.random.default_rng(0), torch.Generator().manual_seed(0))
    grads = []
    for loss_fn in (system.training_loss, lambda *a: reference.training_loss(system, *a)):
        system.zero_grad(set_to_none=True)
        loss = loss_fn(images, LABELS, perms)
        loss.backward()
        grads.append((loss.detach(), {n: p.grad for n, p in system.named_parameters() if p.grad is not None}))
    (loss, ours), (ref_loss, theirs) = grads
    torch.testing.assert_close(loss, ref_loss, rtol=0, atol=1e-5)
    assert ours.keys() == theirs.keys() and any('text' in n or 'transformer' in n for n in ours)
    for name in ours:
        torch.testing.assert_close(ours[name], theirs[name], rtol=1e-5, atol=1e-6, msg=name)


def test_training_encodes_each_distinct_caption_once(compose_config, images, monkeypatch):
    system = build(compose_config).train()
    perms = gen_tgt_perms(10, 6, True, True, np.random.default_rng(0), torch.Generator().manual_seed(0))
    batches = []
    encode = system.model.encode_caption
    monkeypatch.setattr(system.model, 'encode_caption', lambda tokens: batches.append(len(tokens)) or encode(tokens))
    system.training_loss(images, LABELS, perms)
    # One call; fewer rows than the P x N captions the original encodes, more than one caption.
    assert len(batches) == 1 and 1 < batches[0] < len(perms) * len(LABELS)
