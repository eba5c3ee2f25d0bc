"""The shipped tiny model: loadable by name everywhere a checkpoint is accepted, and it reads rendered words."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFont

from strhub.data.synthetic import SCENE_TESTS, heldout_samples, label_sampler
from strhub.data.synthetic.fonts import find_font_files
from strhub.data.utils import CHARSETS, CharsetAdapter
from strhub.models import CheckpointError, load_from_checkpoint
from strhub.pretrained import PRETRAINED, PRETRAINED_DIR, pretrained_path
from strhub.read import TextReader
from _cli import CLIError, resolve_checkpoint

REPO = Path(__file__).resolve().parents[1]
NAME = 'clip4str-tiny'
# Word accuracy the shipped model must keep on 200 freshly rendered test-set samples (measured: 87.5% with the 21
# font families of the development machine, 90% with DejaVu and Pillow's font alone, a fresh machine's fonts; the
# previous model read 85% and 84%; see test_reads_rendered_words): below what strhub/pretrained/README.md
# reports on the full synthetic test sets, so that a machine with other fonts (a fresh machine has only DejaVu and
# Pillow's font) passes, while a broken or untrained model cannot.
MIN_ACCURACY = 0.8
# Of 240 freshly rendered SynthScene samples (20 per category) the shipped model reads 79.6% with the development
# machine's fonts and 84.6% with DejaVu alone (the previous model 77% and 79%): a bar below both, far above a model
# that cannot read.
MIN_SCENE_ACCURACY = 0.75
# Of 150 words drawn plainly with Pillow (not our renderer; see test_reads_plainly_drawn_words) it reads 87% (the
# previous model 88%), 81% with Pillow's own font alone (a machine without DejaVu).
MIN_PLAIN_ACCURACY = 0.75


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
    assert set(ckpt) == {'system', 'state_dict', 'hyper_parameters'} and ckpt['system'] == 'clip4str'
    assert {v.dtype for v in ckpt['state_dict'].values() if v.is_floating_point()} == {torch.float16}
    assert pretrained_path(NAME).stat().st_size < 16 * 2**20


def _rendered_words(n: int):
    """``n`` held-out test words from a seed of their own (not the shipped test sets), labels as evaluation adapts
    them (case-insensitive alphanumerics)."""
    adapt = CharsetAdapter(CHARSETS['36_lowercase'])
    samples = heldout_samples(n, seed=1234)
    return [image for image, _ in samples], [adapt(label) for _, label in samples]


def test_reads_rendered_words():
    torch.manual_seed(0)
    images, labels = _rendered_words(200)
    reader = TextReader(NAME, device='cpu', batch_size=50, adapt_charset=True)
    texts = [r.text for r in reader.read(images)]
    accuracy = np.mean([t == y for t, y in zip(texts, labels)])
    assert accuracy >= MIN_ACCURACY, list(zip(texts, labels))[:20]


def test_reads_plainly_drawn_words():
    # Another renderer's style, as a user's own crops would be: held-out words drawn with ImageDraw.text, left-aligned
    # with room to spare on a flat light background, in lower case, capitals and capitalised, at 16-24 px, in
    # Pillow's own font and DejaVu Sans / Serif where installed. A model that read only our renderer's images would
    # fail here (a blend with more scene-like training read the original fixture's "hello" as "helo").
    rng = np.random.default_rng(7)
    words = [w for w in label_sampler('36_lowercase').test.words if 3 <= len(w) <= 10]
    fonts = [str(p) for p in find_font_files() if p.name in ('DejaVuSans.ttf', 'DejaVuSerif.ttf')]
    images, labels = [], []
    for i in range(150):
        word = words[int(rng.integers(len(words)))]
        word = (word, word.upper(), word.capitalize())[i % 3]
        size = int(rng.integers(16, 25))
        font = ImageFont.truetype(fonts[i % len(fonts)], size) if fonts and i % 3 else ImageFont.load_default(size)
        image = Image.new(
            'RGB', (max(128, int(font.getlength(word)) + 16), 32), tuple(rng.integers(200, 256, 3).tolist())
        )
        ink = tuple(rng.integers(0, 61, 3).tolist())
        ImageDraw.Draw(image).text((int(rng.integers(2, 11)), 16), word, font=font, fill=ink, anchor='lm')
        images.append(image)
        labels.append(word.lower())
    texts = [r.text for r in TextReader(NAME, device='cpu', batch_size=50, adapt_charset=True).read(images)]
    right = [t == y for t, y in zip(texts, labels)]
    assert np.mean(right) >= MIN_PLAIN_ACCURACY, [(t, y) for t, y in zip(texts, labels) if t != y][:20]


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
