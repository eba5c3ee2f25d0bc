"""The shipped tiny model: loadable by name everywhere a checkpoint is accepted, and it reads rendered words."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from strhub.data.synthetic import PLAIN_TEST, SCENE_TESTS, TEST_SETS, heldout_samples, list_fonts
from strhub.data.synthetic.fonts import load_font
from strhub.data.synthetic.labels import load_words, split_words
from strhub.data.utils import CHARSETS, CharsetAdapter
from strhub.models import CheckpointError, load_from_checkpoint
from strhub.pretrained import PRETRAINED, PRETRAINED_DIR, pretrained_path
from strhub.read import TextReader
from _cli import CLIError, resolve_checkpoint
from helpers import FIXTURES, REPO

NAME = 'clip4str-tiny'
# Word accuracy the shipped model must keep on 200 freshly rendered test-set samples (measured: 93.5% with the 21
# font families of the development machine, the previous model 94.0%, one before it 93%; an earlier model read 87.5%
# with an earlier machine's fonts and 90% with DejaVu and Pillow's font alone, a fresh machine's fonts; see
# test_reads_rendered_words): below what strhub/pretrained/README.md reports on the full synthetic test sets, so
# that a machine with other fonts (a fresh machine has only DejaVu and Pillow's font) passes, while a broken or
# untrained model cannot.
MIN_ACCURACY = 0.8
# Of 260 freshly rendered SynthScene samples (20 per category) the shipped model reads 90.4% with the development
# machine's fonts (the previous model 90.0%; of the 240 before loose crops were a category, the model before it read
# 86.2%, an earlier one 80.4% and 84.6% with DejaVu alone, and one before it 79.6%): a bar below them all, far above a
# model that cannot read.
MIN_SCENE_ACCURACY = 0.75
# Of 200 words drawn plainly (SynthPlain's renderer, not the training one; test_reads_plainly_drawn_words) it reads
# 95.0% with the development machine's fonts (the previous model 96.5%, one before 95.0%, an earlier one 95.5%, and
# 95.5% with DejaVu alone and 93% with Pillow's own font alone; one before 94.5%; a 16x8-patch stage 1 that read 64% of
# SynthWords: 70%).
MIN_PLAIN_ACCURACY = 0.85
# Of 200 words small on a fixed 128x32 canvas (test_reads_words_small_on_a_fixed_canvas) it reads 79.0% with the
# development machine's fonts, 91.0% with DejaVu and Pillow's font alone (a fresh machine's) and 73.0% with Pillow's
# alone; the previous model, trained without loose crops, 42.0%.
MIN_CANVAS_ACCURACY = 0.6


def test_every_shipped_model_is_in_the_package():
    for name, file in PRETRAINED.items():
        assert (PRETRAINED_DIR / file).is_file(), name
        assert pretrained_path(name) == PRETRAINED_DIR / file


def test_a_path_wins_over_a_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert pretrained_path(NAME) is not None
    Path(NAME).write_bytes(b'not a checkpoint')
    assert pretrained_path(NAME) is None
    assert resolve_checkpoint(NAME) == Path(NAME)
    with pytest.raises(CheckpointError, match='cannot read checkpoint'):
        load_from_checkpoint(NAME)


def test_unknown_name_lists_the_shipped_models():
    with pytest.raises(CLIError, match=f'nor a shipped model: {NAME}'):
        resolve_checkpoint('clip4str-nonexistent')
    with pytest.raises(CheckpointError, match=f'nor a shipped model: {NAME}'):
        load_from_checkpoint('clip4str-nonexistent')


def test_shipped_checkpoint_is_small_float16():
    ckpt = torch.load(pretrained_path(NAME), map_location='cpu', weights_only=True)
    assert set(ckpt) == {'system', 'state_dict', 'hyper_parameters', 'openai_meanstd'} and ckpt['system'] == 'clip4str'
    assert ckpt['openai_meanstd'] is False  # trained with 0.5/0.5 (configs/experiment/clip4str-tiny*)
    assert {v.dtype for v in ckpt['state_dict'].values() if v.is_floating_point()} == {torch.float16}
    assert pretrained_path(NAME).stat().st_size < 16 * 2**20


def _rendered_words(n: int, sets=TEST_SETS):
    """``n`` held-out test words of the test splits ``sets`` from a seed of their own (not the shipped test sets),
    labels as evaluation adapts them (case-insensitive alphanumerics)."""
    adapt = CharsetAdapter(CHARSETS['36_lowercase'])
    samples = heldout_samples(n, seed=1234, sets=sets)
    return [image for image, _ in samples], [adapt(label) for _, label in samples]


def test_reads_rendered_words():
    torch.manual_seed(0)
    images, labels = _rendered_words(200)
    reader = TextReader(NAME, device='cpu', batch_size=50, adapt_charset=True)
    texts = [r.text for r in reader.read(images)]
    accuracy = np.mean([t == y for t, y in zip(texts, labels)])
    assert accuracy >= MIN_ACCURACY, list(zip(texts, labels))[:20]


def test_reads_plainly_drawn_words():
    # Another renderer's style, as a user's own crops would be: the SynthPlain test set's plain renderer (Pillow's
    # ImageDraw.text, left-aligned on a flat light background; strhub/data/synthetic/plain.py), held-out words. A
    # model that read only our renderer's images would fail here (a blend with more scene-like training read the
    # original fixture's "hello" as "helo").
    torch.manual_seed(0)
    images, labels = _rendered_words(200, (PLAIN_TEST,))
    texts = [r.text for r in TextReader(NAME, device='cpu', batch_size=50, adapt_charset=True).read(images)]
    right = [t == y for t, y in zip(texts, labels)]
    assert np.mean(right) >= MIN_PLAIN_ACCURACY, [(t, y) for t, y in zip(texts, labels) if t != y][:20]


def _words_on_a_canvas(n: int):
    """``n`` held-out words drawn as the original's fixture images are (tests/fixtures/original_tiny/img*.png):
    Pillow's ``ImageDraw.text`` at 11-18 px on a fixed 128x32 light canvas, a few pixels from the left edge or
    centred, so the word is small on it; a font of this machine's each."""
    rng = np.random.default_rng(1234)
    words = [w for w in split_words(load_words())[1] if w.isalnum() and 3 <= len(w) <= 10]
    fonts = list_fonts(CHARSETS['36_lowercase'])
    images, labels = [], []
    while len(images) < n:
        word = words[int(rng.integers(len(words)))]
        font = load_font(fonts[int(rng.integers(len(fonts)))].path, int(rng.integers(11, 19)))
        width = font.getlength(word)
        if width > 120:
            continue
        image = Image.new('RGB', (128, 32), tuple(int(v) for v in rng.integers(200, 256, 3)))
        x = rng.uniform(3, 8) if rng.random() < 0.5 else (128 - width) / 2
        ink = tuple(int(v) for v in rng.integers(0, 71, 3))
        ImageDraw.Draw(image).text((x, 16 + rng.uniform(-4, 4)), word, font=font, fill=ink, anchor='lm')
        images.append(image)
        labels.append(word.lower())
    return images, labels


def test_reads_words_small_on_a_fixed_canvas():
    # The style of the fixture images (and of many a user's first test): the word on a fixed canvas with room to
    # spare, not a crop around it. The model before loose crops were in its training data read 42% of these, and
    # the fixture's "hello" as "helo".
    torch.manual_seed(0)
    images, labels = _words_on_a_canvas(200)
    texts = [r.text for r in TextReader(NAME, device='cpu', batch_size=50, adapt_charset=True).read(images)]
    right = [t == y for t, y in zip(texts, labels)]
    assert np.mean(right) >= MIN_CANVAS_ACCURACY, [(t, y) for t, y in zip(texts, labels) if t != y][:20]
    reads = TextReader(NAME, device='cpu', batch_size=1).read(sorted(FIXTURES.glob('img*.png')))
    assert [r.text for r in reads] == ['hello', 'clip4str', 'text', '2024ab']


def test_reads_scene_like_words():
    # Curved, perspective, occluded, textured backgrounds, light on dark, low resolution, blur, spacing, capitals,
    # codes, long words and their mix (the SynthScene categories), 20 each, freshly rendered.
    torch.manual_seed(0)
    adapt = CharsetAdapter(CHARSETS['36_lowercase'])
    sets = tuple(SCENE_TESTS)
    samples = heldout_samples(20 * len(sets), seed=1234, sets=sets)
    reader = TextReader(NAME, device='cpu', batch_size=60, adapt_charset=True)
    texts = [r.text for r in reader.read([image for image, _ in samples])]
    right = [t == adapt(y) for t, (_, y) in zip(texts, samples)]
    per_set = ', '.join(f'{s}: {np.mean(right[i :: len(sets)]):.0%}' for i, s in enumerate(sets))
    assert np.mean(right) >= MIN_SCENE_ACCURACY, per_set


def test_second_look_reads_loose_crops():
    # Words small somewhere on a wider crop (SynthScene/loose), freshly rendered: of 100 the shipped model reads 70% in
    # one look and 84% with a second look (the development machine's fonts).
    torch.manual_seed(0)
    adapt = CharsetAdapter(CHARSETS['36_lowercase'])
    samples = heldout_samples(100, seed=1234, sets=('SynthScene/loose',))
    images, labels = [image for image, _ in samples], [adapt(y) for _, y in samples]
    accuracy = {}
    for second_look in (False, True):
        reader = TextReader(NAME, device='cpu', batch_size=50, adapt_charset=True, second_look=second_look)
        accuracy[second_look] = np.mean([r.text == y for r, y in zip(reader.read(images), labels)])
    assert accuracy[True] >= max(MIN_SCENE_ACCURACY, accuracy[False] + 0.05), accuracy


def test_read_cli_by_name(tmp_path):
    images, _ = _rendered_words(4)
    for i, encoded in enumerate(images):
        (tmp_path / f'w{i}.jpg').write_bytes(encoded)
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONWARNINGS': 'ignore'}
    out = subprocess.run(
        [sys.executable, str(REPO / 'tools' / 'read.py'), NAME, str(tmp_path), '--device', 'cpu'],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stdout.splitlines() if line.startswith('w')]
    assert len(lines) == 4, out.stdout


def test_test_cli_by_name_writes_its_log_in_the_working_directory(tmp_path, synthetic_root):
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONWARNINGS': 'ignore'}
    cmd = [
        sys.executable,
        str(REPO / 'tools' / 'test.py'),
        NAME,
        '--data_root',
        str(synthetic_root),
        '--device',
        'cpu',
        '--num_workers',
        '0',
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr
    assert '| Combined' in out.stdout
    assert (tmp_path / f'{NAME}.log_newFalse.txt').is_file()
    assert not list(PRETRAINED_DIR.glob('*.txt'))
