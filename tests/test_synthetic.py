"""The built-in synthetic dataset: fonts, labels, rendering and the LMDB layout."""

import io
import json
import re
import string
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from strhub.data.synthetic import (
    PLAIN_TEST,
    FontSpec,
    check_font,
    heldout_samples,
    label_sampler,
    list_fonts,
    load_words,
    make_dataset,
    render_word,
    split_fonts,
    split_words,
)
from strhub.data.utils import CHARSETS
from helpers import load_tool, read_lmdb
from _cli import run_cli

ROOT = Path(__file__).resolve().parents[1]
# Two "families" of Pillow's built-in font: every machine has them, and they exercise the font hold-out.
TWO_FONTS = [FontSpec('Aileron', 'Aileron', None), FontSpec('Aileron Other', 'Other', None)]


@pytest.fixture(scope='module')
def fonts():
    return list_fonts()


@pytest.mark.parametrize('charset', sorted(CHARSETS))
def test_render_word_sizes(fonts, charset):
    rng = np.random.default_rng(0)
    sampler = label_sampler(charset)
    for text in ['a', 'Hello', 'x' * 25] + [sampler.sample(rng) for _ in range(10)]:
        text = ''.join(c for c in text if c in CHARSETS[charset]) or '0'
        img = render_word(text, rng, fonts)
        assert img.mode == 'RGB'
        assert 32 <= img.height <= 64 and 8 <= img.width <= 1600
        assert np.asarray(img).std() > 5  # not blank
    assert render_word('clean', rng, fonts, difficulty=0).mode == 'RGB'


def test_render_word_deterministic(fonts):
    def render(seed):
        return render_word('Determinism', np.random.default_rng(seed), fonts).tobytes()

    assert render(3) == render(3)
    assert render(3) != render(4)


@pytest.mark.parametrize('charset', sorted(CHARSETS))
def test_labels_within_charset(charset):
    rng = np.random.default_rng(1)
    sampler = label_sampler(charset, max_label_length=25)
    train = [sampler.sample(rng, 'train') for _ in range(1000)]
    test = [sampler.sample(rng, 'test') for _ in range(300)]
    cs = set(CHARSETS[charset])
    for label in train + test:
        assert 1 <= len(label) <= 25 and set(label) <= cs, label
    lengths = np.array([len(w) for w in train])
    assert 3 <= np.median(lengths) <= 9  # mostly realistic word lengths
    if charset == '94_full':
        assert any(set(w) & set('!"#$%&()*+,-./:;<=>?@[]^_{|}~') for w in train)
        assert any(w.isupper() for w in train) and any(w.islower() for w in train)
    short = label_sampler(charset, max_label_length=4)
    assert all(1 <= len(short.sample(rng, s)) <= 4 for s in ('train', 'test') for _ in range(200))


def test_test_words_disjoint_from_training():
    words = load_words()
    assert len(words) >= 20000 and all(re.fullmatch('[a-z]+', w) for w in words)
    train, test = split_words(words)
    assert (train, test) == split_words(reversed(words))  # independent of the order
    assert not set(train) & set(test) and len(test) > 0.05 * len(words)
    assert all(len(w) >= 3 for w in test)
    sampler = label_sampler('94_full')
    rng = np.random.default_rng(2)
    test_set = set(test)
    for _ in range(2000):
        runs = re.findall('[a-z]{3,}', sampler.sample(rng, 'train').lower())
        assert not test_set.intersection(runs)


def test_split_fonts():
    fonts = [FontSpec(f'{fam} {s}', fam, None) for fam in 'ABCDEFGHIJ' for s in ('Regular', 'Bold')]
    train, held = split_fonts(fonts, 0.2)
    assert len(held) == 4 and len({f.family for f in held}) == 2  # whole families
    assert not {f.family for f in train} & {f.family for f in held}
    assert split_fonts(list(reversed(fonts)), 0.2)[1] == list(reversed(held))  # stable
    assert split_fonts(fonts[:1]) == (fonts[:1], [])
    one_family = [FontSpec(f'A {s}', 'A', None) for s in ('Regular', 'Bold', 'Italic')]
    train, held = split_fonts(one_family)
    assert len(held) == 1 and len(train) == 2


def test_list_fonts_and_check(tmp_path):
    builtin = list_fonts(system=False)
    assert [f.path for f in builtin] == [None]  # Pillow's scalable font is always there
    (tmp_path / 'broken.ttf').write_bytes(b'not a font' * 10)
    fonts, rejected = list_fonts(fonts_dir=tmp_path, system=False, with_rejected=True)
    assert fonts == builtin and rejected[0][0].endswith('broken.ttf')
    spec, why = check_font(tmp_path / 'broken.ttf', CHARSETS['94_full'])
    assert spec is None and why


def test_make_dataset_layout(tmp_path):
    out = tmp_path / 'synth'
    s = make_dataset(out, 50, 10, 10, seed=0, workers=1, fonts=TWO_FONTS, shard_size=30, progress=False)
    expected = {
        'train/synthetic/000': 30,
        'train/synthetic/001': 20,
        'val/synthetic': 10,
        'test/SynthWords': 10,
        'test/SynthFonts': 10,
        'test/SynthPlain': 10,
    }
    assert s['counts'] == expected
    labels = {}
    for rel, n in expected.items():
        samples = read_lmdb(out / rel)
        assert len(samples) == n
        for data, label in samples:
            with Image.open(io.BytesIO(data)) as img:
                img.load()
                assert img.mode == 'RGB' and (18 if rel == 'test/SynthPlain' else 32) <= img.height <= 64
            assert 1 <= len(label) <= 25 and set(label) <= set(CHARSETS['94_full'])
        labels[rel] = [label for _, label in samples]
    train_labels = set(labels['train/synthetic/000'] + labels['train/synthetic/001'])
    assert not train_labels & set(labels['test/SynthWords'] + labels['test/SynthFonts'] + labels['test/SynthPlain'])
    meta = json.loads((out / 'meta.json').read_text())
    assert meta['seed'] == 0 and meta['counts'] == expected
    assert meta['font_families'] == {'train': ['Aileron'], 'heldout': ['Other']}
    with pytest.raises(FileExistsError):
        make_dataset(out, 5, 1, 1, workers=1, fonts=TWO_FONTS, progress=False)
    s = make_dataset(out, 5, 1, 1, workers=1, fonts=TWO_FONTS[:1], overwrite=True, progress=False)
    assert len(read_lmdb(out / 'train/synthetic/000')) == 5
    assert not (out / 'train/synthetic/001').exists() and not (out / 'test/SynthFonts').exists()  # one font
    assert len(read_lmdb(out / 'test/SynthPlain')) == 1  # in the training fonts then


def test_plain_test_set_is_drawn_plainly():
    # Another renderer's style: flat background, dark ink, left-aligned, lossless; held-out words.
    samples = heldout_samples(12, seed=3, sets=(PLAIN_TEST,))
    test_words = set(label_sampler('94_full').test.words)
    assert sum(label.lower().strip(string.punctuation) in test_words for _, label in samples) >= 6
    for data, label in samples:
        with Image.open(io.BytesIO(data)) as img:
            assert img.format == 'PNG'
            pixels = np.asarray(img.convert('RGB')).astype(int)
        background = pixels[0, 0]
        assert background.min() >= 190 and (pixels == background).all(axis=2).mean() > 0.5, label
        ink = np.flatnonzero((np.abs(pixels - background).sum(axis=2) > 150).any(axis=0))
        assert ink[0] <= 14 and ink[-1] < pixels.shape[1] - 1, label  # from the left, and not cut off
    assert heldout_samples(12, seed=3, sets=(PLAIN_TEST,)) == samples


def test_make_dataset_deterministic_across_workers(tmp_path):
    def build(name, seed, workers):
        make_dataset(tmp_path / name, 40, 8, 8, seed=seed, workers=workers, fonts=TWO_FONTS, progress=False)
        return {p.parent.relative_to(tmp_path / name): read_lmdb(p.parent) for p in (tmp_path / name).rglob('data.mdb')}

    a, b, c = build('a', 7, 1), build('b', 7, 2), build('c', 8, 1)
    assert len(a) == 5 and a == b
    assert a != c


def test_cli(tmp_path, capsys):
    cmd = [
        sys.executable,
        str(ROOT / 'tools/make_synthetic_dataset.py'),
        '--out',
        str(tmp_path / 'd'),
        '--num_train',
        '12',
        '--num_val',
        '3',
        '--num_test',
        '3',
        '--workers',
        '1',
        '--no_system_fonts',
        '--no_progress',
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    assert 'Wrote 21 images' in r.stdout and 'train/synthetic/000' in r.stdout
    assert len(read_lmdb(tmp_path / 'd/train/synthetic/000')) == 12
    # In-process (a second interpreter start costs seconds): an existing dataset is a clean error, exit code 2; the
    # hyphenated spelling of earlier versions is still accepted.
    tool = load_tool('make_synthetic_dataset')
    argv = [a.replace('_', '-') if a.startswith('--') else a for a in cmd[2:]]
    with pytest.raises(SystemExit) as e:
        run_cli(tool.main, argv, prog='make_synthetic_dataset.py')
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith('make_synthetic_dataset.py: error: ') and 'exists' in err and 'Traceback' not in err


# --- Other scripts: charsets, word lists, fonts -------------------------------------------------------------------

GREEK_WORDS = ROOT / 'strhub' / 'data' / 'wordlist_el.txt'
GREEK = set('αβγδεζηθικλμνξοπρσςτυφχψωάέήίόύώΑΒΓΔΕΖΗΘΙΚΛΜΝΞΟΠΡΣΤΥΦΧΨΩΆΈΉΊΌΎΏ')


def test_greek_word_list():
    words = load_words(GREEK_WORDS)
    assert len(words) > 1000 and len(set(words)) == len(words)
    assert set(''.join(words)) <= GREEK and all(w == w.lower() for w in words)


def test_labels_of_two_word_lists(tmp_path):
    sampler = label_sampler('125_latin-greek', words=[ROOT / 'strhub' / 'data' / 'wordlist.txt', GREEK_WORDS])
    rng = np.random.default_rng(0)
    labels = [sampler.sample(rng) for _ in range(3000)]
    assert all(set(y) <= set(CHARSETS['125_latin-greek']) for y in labels)
    words = [y for y in labels if y.isalpha() and (set(y) <= GREEK or y.isascii())]
    greek = [y for y in words if set(y) <= GREEK]
    assert 0.3 < len(greek) / len(words) < 0.7  # each list drawn equally often, whatever its size
    # Greek capitals drop the accents, a capitalised word keeps its accent.
    assert {sampler.case('έξοδος', rng) for _ in range(50)} == {'έξοδος', 'Έξοδος', 'ΕΞΟΔΟΣ'}
    test_words = [sampler.sample(rng, 'test') for _ in range(300)]
    held_out = {w.lower() for w in test_words}
    assert held_out & set(load_words(GREEK_WORDS)) and not held_out & {y.lower() for y in words}
    with pytest.raises(ValueError, match='cannot read word list'):
        label_sampler(words=[tmp_path / 'missing.txt'])
    (tmp_path / 'cyrillic.txt').write_text('москва\n')
    with pytest.raises(ValueError, match='no word of the word lists fits the charset'):
        label_sampler('36_lowercase', words=[tmp_path / 'cyrillic.txt'])


def test_font_check_allows_shapes_shared_across_scripts(fonts):
    """Latin A and Greek Alpha are one glyph in DejaVu: not a symbol font's repeated shape."""
    dejavu = [f for f in fonts if f.family == 'DejaVu Sans' and f.path]
    if not dejavu:
        pytest.skip('DejaVu Sans is not installed')
    spec, why = check_font(dejavu[0].path, CHARSETS['125_latin-greek'])
    assert spec is not None, why
    spec, why = check_font(None, CHARSETS['125_latin-greek'])  # Pillow's built-in font has no Greek
    assert spec is None and 'no glyph' in why


def test_cli_other_script(tmp_path):
    charset_file = tmp_path / 'charset.txt'
    charset_file.write_text('0123456789\nαβγδεζηθικλμνξοπρσςτυφχψωάέήίόύώ\n', encoding='utf-8')
    cmd = [sys.executable, str(ROOT / 'tools/make_synthetic_dataset.py'), '--out', str(tmp_path / 'd')]
    cmd += ['--charset', str(charset_file), '--words', str(GREEK_WORDS), '--num_train', '20', '--num_val', '2']
    cmd += ['--num_test', '2', '--workers', '1', '--no_progress']
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    labels = [y for _, y in read_lmdb(tmp_path / 'd/train/synthetic/000')]
    assert all(set(y) <= GREEK | set('0123456789') for y in labels) and any(set(y) & GREEK for y in labels)
    assert json.loads((tmp_path / 'd/meta.json').read_text())['word_lists'] == ['wordlist_el.txt']
    r = subprocess.run([*cmd[:2], '--list_scripts'], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and re.search(r'Latin\s+\d+ fonts', r.stdout) and 'Greek' in r.stdout
    for bad, message in (('aba', "repeats 'a'"), (str(tmp_path / 'empty.txt'), 'is empty')):
        (tmp_path / 'empty.txt').write_text('\n')
        r = subprocess.run([*cmd[:2], '--out', str(tmp_path / 'e'), '--charset', bad], capture_output=True, text=True)
        assert r.returncode == 2 and message in r.stderr, r.stderr
