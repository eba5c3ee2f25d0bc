"""The scene-like variations of the synthetic dataset: off by default (samples as before), each one changing the
image, determinism, the scene label kinds and the SynthScene test sets."""

import hashlib
import json
import re

import numpy as np
import pytest
from PIL import Image

from strhub.data.synthetic import SCENE_TESTS, SceneOptions, label_sampler, make_dataset, render_word
from strhub.data.synthetic import build, effects
from strhub.data.synthetic.build import render_sample
from strhub.data.synthetic.render import _loose_margins
from strhub.data.synthetic.scene import CHANCE_VARIATIONS, IMAGE_VARIATIONS, LATER_VARIATIONS
from strhub.data.test_sets import plan_test_sets
from strhub.data.utils import CHARSETS
from helpers import load_tool
from _cli import run_cli
from test_synthetic import TWO_FONTS, read_lmdb

FONTS = {'train': TWO_FONTS[:1], 'heldout': TWO_FONTS[1:]}
# sha256 of 24 samples (6 of each split) with Pillow's built-in font, rendered by the code before the scene-like
# variations existed; image bytes depend on Pillow's FreeType and libjpeg, so they are only comparable on the versions
# they were made with.
GOLDEN = ('13.0.0', '2.4.6', '5209a7873c2444698f54cc3b8ee217b46b06dd3dd5c412f4de8e3f8752da9339')


@pytest.fixture(scope='module')
def sampler():
    return label_sampler('94_full')


def _digest(sampler, scene=None) -> str:
    h = hashlib.sha256()
    for split in ('train', 'val', 'SynthWords', 'SynthFonts'):
        for i in range(6):
            data, label = render_sample(split, i, sampler, FONTS, seed=0, difficulty=0.5, scene=scene)
            h.update(data)
            h.update(label.encode())
    return h.hexdigest()


def test_off_by_default_renders_as_before(sampler):
    off = _digest(sampler)
    assert _digest(sampler, SceneOptions(share=0.5)) == off  # strength 0 draws nothing, whatever the share
    if (Image.__version__, np.__version__) != GOLDEN[:2]:
        pytest.skip(f'golden digest made with Pillow {GOLDEN[0]}, NumPy {GOLDEN[1]}')
    assert off == GOLDEN[2]


@pytest.mark.parametrize('variation', IMAGE_VARIATIONS + ('dark',))
def test_each_variation_changes_the_image(variation):
    fonts = TWO_FONTS[:1]
    scene = SceneOptions(**{variation: 1.0})
    for seed in range(3):
        plain = render_word('Variation', np.random.default_rng(seed), fonts)
        varied = render_word('Variation', np.random.default_rng(seed), fonts, scene=scene)
        again = render_word('Variation', np.random.default_rng(seed), fonts, scene=scene)
        assert varied.tobytes() == again.tobytes()  # deterministic
        assert varied.mode == 'RGB' and 32 <= varied.height <= 64 and np.asarray(varied).std() > 5
        assert plain.size != varied.size or plain.tobytes() != varied.tobytes(), (variation, seed)
        zero = render_word('Variation', np.random.default_rng(seed), fonts, scene=SceneOptions(**{variation: 0.0}))
        assert zero.tobytes() == plain.tobytes()


def test_tilt_keeps_the_canvas_in_front_of_the_camera():
    # A one-letter word on its canvas's wide margins (the case that once rendered a multi-gigabyte image): turned
    # far, a corner of the canvas came to or behind the camera and was magnified without bound or mirrored.
    corners = np.array([[0, 0], [59, 0], [59, 65], [0, 65]], float)
    centre = corners.mean(0)
    for seed in range(2000):
        h = effects.tilt(np.random.default_rng(seed), 1.0, centre, 22, 28, corners)
        p = np.c_[corners, np.ones(4)] @ h.T
        assert (p[:, 2] > 0).all(), seed
        extent = np.ptp(p[:, :2] / p[:, 2:], axis=0)
        assert (extent < 8 * 65).all(), (seed, extent)
    # Without points, the homography is the one drawn (the images of existing datasets stay as they were).
    free = effects.tilt(np.random.default_rng(0), 1.0, centre, 400, 28)
    assert np.allclose(free, effects.tilt(np.random.default_rng(0), 1.0, centre, 400, 28, corners))


def test_loose_margins():
    # The line box (x0, y0, x1, y1) stays inside the crop; at full strength it is down to about a third of the crop's
    # height, and the crop is 2.5 times as wide as high or more.
    rng = np.random.default_rng(0)
    box = (10.0, 5.0, 70.0, 25.0)  # a short word: 60 x 20
    base = np.full(4, 2.0)
    shares, aspects = [], []
    for _ in range(500):
        pad = _loose_margins(base, box, rng, 1.0)
        assert (pad >= base).all()
        h, w = 20 + pad[1] + pad[3], 60 + pad[0] + pad[2]
        shares.append(20 / h)
        aspects.append(w / h)
    assert 0.3 < min(shares) < 0.35 and max(shares) < 0.7 and min(aspects) >= 2.5
    assert np.mean(np.array(shares) < 0.45) > 0.3  # often as small as a word on a fixed 128 x 32 canvas
    weak = [_loose_margins(base, box, rng, 0.4) for _ in range(200)]
    assert min(20 / (20 + pad[1] + pad[3]) for pad in weak) > 0.5


def test_scene_options():
    with pytest.raises(ValueError, match='within 0..1'):
        SceneOptions(curve=1.5)
    mix = SceneOptions.uniform(0.5, share=0.2)
    earlier = [v for v in IMAGE_VARIATIONS + CHANCE_VARIATIONS if v not in LATER_VARIATIONS]
    assert all(getattr(mix, v) == 0.5 for v in earlier) and mix.share == 0.2
    # variations added later are off unless named: the commands that made earlier datasets make them again
    assert LATER_VARIATIONS == ('loose',) and mix.loose == 0
    assert SceneOptions.uniform(0.5, shares={'loose': 0.3}).loose == 0.5
    assert SCENE_TESTS['SynthScene/mixed'].loose == 0
    rng = np.random.default_rng(0)
    hits = [mix.magnitude('blur', rng) for _ in range(2000)]
    assert 0.15 < np.mean([m > 0 for m in hits]) < 0.25 and max(hits) <= 0.5
    # shares of their own: the named variations follow theirs, the rest the common one; the draws are the same
    weighted = SceneOptions.uniform(1, share=0.1, shares={'curve': 0.6, 'dark': 0.0})
    a, b = np.random.default_rng(1), np.random.default_rng(1)
    curves = [weighted.magnitude('curve', a) for _ in range(2000)]
    assert 0.55 < np.mean([m > 0 for m in curves]) < 0.65
    assert [m > 0 for m in curves] == [SceneOptions(curve=1, share=0.6).magnitude('curve', b) > 0 for _ in range(2000)]
    assert 0.07 < np.mean([weighted.magnitude('blur', rng) > 0 for _ in range(2000)]) < 0.13
    assert not any(weighted.chance('dark', rng) for _ in range(500))
    with pytest.raises(ValueError, match=r"no scene variation \['curved'\]"):
        SceneOptions.uniform(1, shares={'curved': 0.2})
    with pytest.raises(ValueError, match='within 0..1'):
        SceneOptions.uniform(1, shares={'curve': 2})


@pytest.mark.parametrize('charset', sorted(CHARSETS))
def test_scene_labels(charset):
    sampler = label_sampler(charset)
    cs = set(CHARSETS[charset])
    rng = np.random.default_rng(0)
    for words in ('train', 'test'):
        codes = [sampler.scene_sample(rng, words, 'codes') for _ in range(200)]
        longs = [sampler.scene_sample(rng, words, 'long') for _ in range(200)]
        caps = [sampler.scene_sample(rng, words, 'caps') for _ in range(200)]
        for label in codes + longs + caps:
            assert 1 <= len(label) <= 25 and set(label) <= cs, label
        assert all(re.search(r'\d', y) and not re.search('[a-z]' if sampler.has_upper else '[A-Z]', y) for y in codes)
        assert all(12 <= len(y) <= 15 and y.isalpha() for y in longs)
        if words == 'test':
            assert all(y.lower() in sampler.test_set for y in longs)
        else:
            assert not any(sampler.leaks(y) for y in codes + longs + caps)
            # mostly compounds of two training words, so that long words cannot be learnt by heart
            dictionary = set(sampler.train.words)
            assert 0.15 < np.mean([y.lower() in dictionary for y in longs]) < 0.6
            assert len(set(longs)) > 190
        if sampler.has_upper and sampler.has_lower:
            cased = [y for y in caps if sum(c.isalpha() for c in y) > 1]
            assert all(any(c.isupper() for c in y) for y in cased)
            assert 0.1 < np.mean([y.isupper() for y in cased]) < 0.9  # all-caps and mixed case
            assert not any('I' in y and 'l' in y for y in caps if not y.isupper())
    if charset == '94_full':
        assert any('-' in y for y in codes) and any(re.fullmatch('[A-Z]{2}-[0-9]{3}-[A-Z]{2}', y) for y in codes)


def test_scene_test_sets(tmp_path, monkeypatch):
    out = tmp_path / 'synth'
    s = make_dataset(out, 4, 2, 4, seed=0, workers=1, fonts=TWO_FONTS, scene_tests=True, progress=False)
    names = [f'SynthScene/{k}' for k in ('curved', 'occluded', 'lowres', 'blur', 'background', 'dark', 'caps')]
    names += [f'SynthScene/{k}' for k in ('codes', 'long', 'perspective', 'spacing', 'loose', 'mixed')]
    assert sorted(names) == sorted(SCENE_TESTS)
    assert all(s['counts'][f'test/{n}'] == 4 for n in names)
    groups, _ = plan_test_sets(out / 'test')
    assert groups['Other'] == sorted(
        ['SynthFonts', 'SynthPlain', 'SynthWords', *names]
    )  # nested names, as test.py reports them
    samples = {n: read_lmdb(out / 'test' / n) for n in names}
    train = {y for _, y in read_lmdb(out / 'train/synthetic/000')}
    for n, pairs in samples.items():
        assert all(set(y) <= set(CHARSETS['94_full']) for _, y in pairs) and not train & {y for _, y in pairs}
    assert all(12 <= len(y) <= 15 for _, y in samples['SynthScene/long'])
    assert all(re.search(r'\d', y) for _, y in samples['SynthScene/codes'])
    meta = json.loads((out / 'meta.json').read_text())
    assert meta['scene_tests']['SynthScene/curved'] == {'curve': 1, 'share': 1}
    # Even samples in the training fonts, odd ones in the held-out fonts (the training fonts where none is held out).
    used = []
    monkeypatch.setattr(
        build, 'render_word', lambda label, rng, fonts, *args: used.append(fonts) or Image.new('RGB', (8, 8))
    )
    sampler = label_sampler('94_full')
    for i in range(4):
        render_sample('SynthScene/curved', i, sampler, FONTS)
    render_sample('SynthScene/curved', 1, sampler, {'train': FONTS['train'], 'heldout': []})
    assert used == [FONTS['train'], FONTS['heldout'], FONTS['train'], FONTS['heldout'], FONTS['train']]


def test_training_scene_and_cli(tmp_path, capsys):
    tool = load_tool('make_synthetic_dataset')
    argv = ['--out', str(tmp_path / 'd'), '--num_train', '8', '--num_val', '2', '--num_test', '2', '--workers', '1']
    argv += ['--no_system_fonts', '--no_progress', '--scene', '0.5', '--scene_share', '0.5', '--scene_tests']
    assert tool.main(argv) == 0
    assert 'test/SynthScene/mixed' in capsys.readouterr().out
    meta = json.loads((tmp_path / 'd/meta.json').read_text())
    assert meta['scene']['curve'] == 0.5 and meta['scene']['share'] == 0.5 and 'shares' not in meta['scene']
    uniform = read_lmdb(tmp_path / 'd/train/synthetic/000')
    plain = make_dataset(tmp_path / 'p', 8, 2, 2, workers=1, fonts=TWO_FONTS[:1], progress=False)
    assert 'scene' not in plain and 'scene_tests' not in plain
    scene = make_dataset(tmp_path / 's', 8, 2, 2, workers=1, fonts=TWO_FONTS[:1], progress=False, scene=0.5)
    assert read_lmdb(tmp_path / 'p/train/synthetic/000') != read_lmdb(tmp_path / 's/train/synthetic/000')
    assert read_lmdb(tmp_path / 'p/test/SynthWords') == read_lmdb(tmp_path / 's/test/SynthWords')  # tests unchanged
    assert scene['scene']['share'] == 0.25
    make_dataset(tmp_path / 's2', 8, 2, 2, workers=2, fonts=TWO_FONTS[:1], progress=False, scene=0.5)
    assert read_lmdb(tmp_path / 's2/train/synthetic/000') == read_lmdb(tmp_path / 's/train/synthetic/000')
    with pytest.raises(SystemExit) as e:
        run_cli(tool.main, [*argv[:2], '--scene', '2'], prog='make_synthetic_dataset.py')
    assert e.value.code == 2 and '--scene must be within 0..1' in capsys.readouterr().err
    # shares of their own: recorded in meta.json; a wrong name, value or one without --scene is refused, naming it
    assert tool.main([*argv, '--overwrite', '--scene_shares', 'curve=0.9', 'codes=0']) == 0
    assert json.loads((tmp_path / 'd/meta.json').read_text())['scene']['shares'] == {'curve': 0.9, 'codes': 0.0}
    assert read_lmdb(tmp_path / 'd/train/synthetic/000') != uniform
    with pytest.raises(ValueError, match='need scene > 0'):
        make_dataset(tmp_path / 'n', 2, 0, 0, workers=1, fonts=TWO_FONTS[:1], progress=False, scene_shares={'curve': 1})
    assert not (tmp_path / 'n').exists()
    for bad, message in [
        (['--scene', '1', '--scene_shares', 'curved=0.2'], "--scene_shares curved=0.2: no variation 'curved'"),
        (['--scene', '1', '--scene_shares', 'curve=lots'], "--scene_shares curve=lots: 'lots' is not a number"),
        (['--scene', '1', '--scene_shares', 'curve=1.5'], '--scene_shares curve=1.5: the share must be within 0..1'),
        (['--scene_shares', 'curve=0.5'], '--scene_shares needs --scene'),
    ]:
        with pytest.raises(SystemExit) as e:
            run_cli(tool.main, [*argv[:2], *bad], prog='make_synthetic_dataset.py')
        assert e.value.code == 2 and message in capsys.readouterr().err, bad


def test_heldout_samples_of_scene_sets(monkeypatch):
    # Each set in turn, as the test sets render them (the same sample for the same seed, split and index).
    monkeypatch.setattr(build, 'list_fonts', lambda charset: FONTS['train'] + FONTS['heldout'])
    monkeypatch.setattr(build, 'split_fonts', lambda fonts: (FONTS['train'], FONTS['heldout']))
    sets = ('SynthScene/long', 'SynthWords')
    samples = build.heldout_samples(4, seed=7, sets=sets)
    sampler = label_sampler('94_full')
    assert samples == [render_sample(sets[i % 2], i, sampler, FONTS, seed=7) for i in range(4)]
    assert all(12 <= len(y) <= 15 for _, y in samples[::2])
    with pytest.raises(ValueError, match=r"not a test split: \['SynthScene/nope'\]"):
        build.heldout_samples(2, seed=7, sets=('SynthScene/nope',))
