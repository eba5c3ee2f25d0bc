"""The second look (``strhub.models.second_look``): its views, where it finds the word, and that it only ever
replaces a reading by a more confident one, through ``TextReader`` and ``tools/test.py``."""

import json

import pytest
import torch
from PIL import Image, ImageDraw

from strhub.deploy.onnx_format import OnnxModelError
from strhub.evaluation import evaluate
from strhub.models.parseq.decoder import CrossAttentionRecorder
from strhub.models.second_look import SecondLookOptions, tensor_to_image, text_columns, views
from strhub.read import TextReader
from _cli import CLIError
from helpers import load_tool

NAME = 'clip4str-tiny'


@pytest.fixture(scope='module')
def reader() -> TextReader:
    torch.manual_seed(0)
    return TextReader(NAME, device='cpu', batch_size=8)


def _word_at_left(text: str = 'HELLO') -> Image.Image:
    """A wide white crop with a word drawn in its left fifth: a loose crop."""
    img = Image.new('RGB', (400, 60), 'white')
    ImageDraw.Draw(img).text((8, 12), text, fill='black', font_size=30)
    return img


def test_views_cut_pad_and_trim():
    img = Image.new('RGB', (160, 40), (10, 20, 30))
    named = views(img, (4, 6), grid_w=16)
    assert [name for name, _ in named] == ['cut to the word', 'cut closer', 'padded', 'rows trimmed']
    cut, cut_closer, padded, trimmed = [view for _, view in named]
    # Columns 4..6 of 16 over 160 pixels are x 40..60; margins of one and half a column.
    assert cut.size == (40, 40) and cut_closer.size == (30, 40)
    assert padded.size == (160 + 2 * 12, 40 + 2 * 6) and padded.getpixel((0, 0)) == (10, 20, 30)
    assert trimmed.size == (160, 32)
    # No word found (an empty reading): only the generic views.
    assert [v.size for _, v in views(img, None, grid_w=16)] == [padded.size, trimmed.size]
    # Margins never leave the image.
    assert views(img, (0, 16), grid_w=16)[0][1].size == (160, 40)


def test_finds_the_word_in_a_loose_crop(reader):
    system = reader.system
    img = _word_at_left()
    batch = reader.transform(img)[None]
    layer = system.model.visual_decoder.layers[-1]
    with torch.inference_mode(), CrossAttentionRecorder([layer]) as rec:
        visual_logits, _ = system.model.forward_branches(batch)
    assert rec.weights and all(lay is layer for lay, _ in rec.weights)  # the cross decoder's layers are left out
    [(lo, hi)] = text_columns(rec, system, visual_logits, SecondLookOptions().attention)
    grid_w = system.model.clip_model.visual.grid_size[1]
    # The word covers about the left quarter of the crop's width.
    assert 0 <= lo < hi <= grid_w // 2, (lo, hi)


def test_only_more_confident_readings_replace_the_first(reader):
    images = [_word_at_left(), _word_at_left('clip'), Image.new('RGB', (100, 32), 'white')]
    first = reader.read(images)
    never = TextReader(reader.system, device='cpu', second_look=SecondLookOptions(below=0)).read(images)
    assert never == first
    always = TextReader(reader.system, device='cpu', second_look=SecondLookOptions(below=1.01)).read(images)
    for a, f in zip(always, first):
        assert a.confidence >= f.confidence
        assert a == f or a.confidence > f.confidence


def test_reads_loose_crops(reader):
    # Words in the left fifth of a wide crop: a single look read none of these right (helo, cip, steet, opin24,
    # infarmation), the second look all.
    words = ['HELLO', 'clip', 'Street', 'open24', 'information']
    images = [_word_at_left(w) for w in words]
    looked = TextReader(reader.system, device='cpu', second_look=True).read(images)
    assert [r.text.lower() for r in looked] == [w.lower() for w in words]
    assert all(a.confidence >= b.confidence for a, b in zip(looked, reader.read(images)))


def test_preprocessed_tensors_get_a_second_look_too(reader):
    img = _word_at_left()
    x = reader.preprocess(img)
    assert tensor_to_image(x).size == (128, 32)
    [r] = TextReader(reader.system, device='cpu', second_look=SecondLookOptions(below=1.01)).read(x)
    assert r.confidence >= reader.read(x)[0].confidence


def test_refused_where_it_cannot_work(tmp_path, synthetic_root):
    with pytest.raises(OnnxModelError, match='second_look'):
        TextReader(tmp_path / 'model.onnx', second_look=True)
    with pytest.raises(ValueError, match='attention'):
        SecondLookOptions(attention=0)
    with pytest.raises(ValueError, match='CLIP4STR'):
        evaluate(torch.nn.Linear(1, 1), str(synthetic_root), ['SynthWords'], second_look=SecondLookOptions())
    with pytest.raises(CLIError, match='--second_look'):
        load_tool('test').main([NAME, '--data_root', str(synthetic_root), '--second_look', '--rotation', '90'])


def test_test_cli_second_look(tmp_path, synthetic_root, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / 'r.json'
    args = [NAME, '--data_root', str(synthetic_root), '--device', 'cpu', '--num_workers', '0']
    assert load_tool('test').main(args + ['--second_look', '0.95', '--out', str(out)]) == 0
    looked = json.loads(out.read_text())
    assert looked['second_look'] == 0.95
    assert (tmp_path / f'{NAME}.log_second_look0.95_newFalse.txt').is_file()
    assert load_tool('test').main(args + ['--out', str(out)]) == 0
    once = json.loads(out.read_text())
    assert 'second_look' not in once
    for name, result in once['sets'].items():
        assert looked['sets'][name]['num_samples'] == result['num_samples']
        assert looked['sets'][name]['confidence'] >= result['confidence'], name


def test_read_cli_second_look(tmp_path, capsys):
    for w in ('clip', 'open24'):
        _word_at_left(w).save(tmp_path / f'{w}.png')
    assert load_tool('read').main([NAME, str(tmp_path), '--device', 'cpu', '--second_look']) == 0
    lines = sorted(line.split(' (')[0] for line in capsys.readouterr().out.splitlines() if ':' in line)
    assert lines == ['clip.png: clip', 'open24.png: open24']
