"""Mixed precision for inference (test.py, read.py, TextReader, evaluate): bf16 reads what float32 reads."""

import pytest
import torch

from strhub.device import PrecisionError, autocast
from strhub.read import TextReader
from _cli import CLIError
from helpers import FIXTURES, load_tool
from test_pretrained import NAME, _rendered_words


def _words(images, precision):
    readings = TextReader(NAME, device='cpu', precision=precision).read_tensor(images)
    return [r.text for r in readings], [r.confidence for r in readings]


def test_bf16_reads_the_fixture_images_as_float32():
    # The shipped model (the fixture checkpoint has random weights: its near-ties flip in any precision).
    reader = TextReader(NAME, device='cpu')
    images = torch.stack([reader.preprocess(p) for p in sorted(FIXTURES.glob('img*.png'))])
    texts32, conf32 = _words(images, '32')
    texts16, conf16 = _words(images, 'bf16-mixed')
    # It reads three of the four ('hello' as 'helo', README: "Scene-like text").
    right = [a == b for a, b in zip(texts32, ['hello', 'clip4str', 'text', '2024ab'])]
    assert sum(right) >= 3, texts32
    assert texts16 == texts32
    # The confidences of the words read right agree; a misread is a near-tie, which bf16 moves most.
    assert [c for c, r in zip(conf16, right) if r] == pytest.approx([c for c, r in zip(conf32, right) if r], abs=0.05)
    assert conf16 != conf32  # bf16 did run


def test_bf16_reads_rendered_words_as_float32():
    reader = TextReader(NAME, device='cpu')
    images = torch.stack([reader.preprocess(i) for i in _rendered_words(100)[0]])
    texts32, _ = _words(images, '32')
    texts16, _ = _words(images, 'bf16-mixed')
    differ = [(a, b) for a, b in zip(texts32, texts16) if a != b]
    assert len(differ) <= 2, differ


def test_read_cli_precision(capsys):
    read = load_tool('read')
    image = str(FIXTURES / 'img2_Text.png')
    threads = torch.get_num_threads()
    try:
        assert read.main([NAME, image, '--precision', 'bf16-mixed', '--device', 'cpu', '--threads', '1']) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    assert 'img2_Text.png: text (' in capsys.readouterr().out
    with pytest.raises(CLIError, match='--threads must be >= 1'):
        read.main([NAME, image, '--threads', '0'])
    with pytest.raises(CLIError, match="unknown precision 'fp8'"):
        read.main([NAME, image, '--precision', 'fp8'])


def test_unknown_or_unavailable_precision_is_an_error():
    with pytest.raises(PrecisionError, match='unknown precision'):
        autocast(torch.device('cpu'), 'fp8')
    with pytest.raises(PrecisionError, match='needs a CUDA device'):
        autocast(torch.device('cpu'), '16-mixed')
    with pytest.raises(PrecisionError, match='needs a CUDA device'):
        TextReader(NAME, device='cpu', precision='16-mixed')
