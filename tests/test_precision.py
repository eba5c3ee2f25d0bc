"""Mixed precision for inference (test.py, read.py, TextReader, evaluate): bf16 reads what float32 reads."""

from pathlib import Path

import pytest
import torch

from strhub.device import PrecisionError, autocast
from strhub.read import TextReader
from test_pretrained import NAME, _rendered_words

FIXTURES = Path(__file__).parent / 'fixtures' / 'original_tiny'


def _words(system, images, precision):
    with torch.inference_mode(), autocast(torch.device('cpu'), precision):
        logits = system(images)
    return system.decode_logits(logits)


def test_bf16_reads_the_fixture_images_as_float32():
    # The shipped model (the fixture checkpoint has random weights: its near-ties flip in any precision).
    reader = TextReader(NAME, device='cpu')
    images = torch.stack([reader.preprocess(p) for p in sorted(FIXTURES.glob('img*.png'))])
    texts32, conf32 = _words(reader.system, images, '32')
    texts16, conf16 = _words(reader.system, images, 'bf16-mixed')
    assert texts16 == texts32
    assert conf16 == pytest.approx(conf32, abs=0.05)


def test_bf16_reads_rendered_words_as_float32():
    reader = TextReader(NAME, device='cpu')
    images = torch.stack([reader.preprocess(i) for i in _rendered_words(100)[0]])
    texts32, _ = _words(reader.system, images, '32')
    texts16, _ = _words(reader.system, images, 'bf16-mixed')
    differ = [(a, b) for a, b in zip(texts32, texts16) if a != b]
    assert len(differ) <= 2, differ


def test_unknown_or_unavailable_precision_is_an_error():
    with pytest.raises(PrecisionError, match='unknown precision'):
        autocast(torch.device('cpu'), 'fp8')
    with pytest.raises(PrecisionError, match='needs a CUDA device'):
        autocast(torch.device('cpu'), '16-mixed')
