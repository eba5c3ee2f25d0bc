"""Building the synthetic dataset: which sample goes where (splits, shards), one sample as a pure function of
(seed, split, index), and the parallel writer of the LMDBs and ``meta.json``."""

import json
import multiprocessing as mp
import os
import shutil
import time
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image

from strhub.data.lmdb_io import write_lmdb
from strhub.data.synthetic.fonts import FontSpec, list_fonts, split_fonts
from strhub.data.synthetic.labels import WORDLIST, LabelSampler, label_sampler
from strhub.data.synthetic.plain import render_plain
from strhub.data.synthetic.render import encode_image, png_bytes, render_word
from strhub.data.synthetic.scene import SCENE_TESTS, SceneOptions
from strhub.data.utils import CHARSETS

VERSION = 1  # bump when the rendering or sampling changes, so meta.json tells datasets apart
# How each split draws its labels ('train' words or held-out 'test' words) and its fonts ('train' or 'heldout').
SPLITS = {
    'train': ('train', 'train'),
    'val': ('train', 'train'),
    'SynthWords': ('test', 'train'),
    'SynthFonts': ('test', 'heldout'),
}
TEST_SETS = ('SynthWords', 'SynthFonts')
# Held-out words drawn by another, plain renderer (strhub.data.synthetic.plain), written with every dataset.
PLAIN_TEST = 'SynthPlain'
# The scene test sets (SCENE_TESTS) and SynthPlain draw held-out words, and fonts alternately from the training and
# held-out families.
ALTERNATE_SPLIT = ('test', 'alternate')


@dataclass
class _Config:
    seed: int
    difficulty: float
    sampler: LabelSampler
    fonts: Dict[str, List[FontSpec]]
    scene: Dict[str, SceneOptions]


_CFG: Optional[_Config] = None


def _init_worker(cfg: _Config) -> None:
    global _CFG
    _CFG = cfg


def _sample_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(split.encode()), index])


def render_sample(
    split: str,
    index: int,
    sampler: LabelSampler,
    fonts: Dict[str, List[FontSpec]],
    seed: int = 0,
    difficulty: float = 0.5,
    scene: Optional[SceneOptions] = None,
) -> Tuple[bytes, str]:
    """Sample ``index`` of ``split`` (a key of ``SPLITS`` or ``SCENE_TESTS``, or ``PLAIN_TEST``): (encoded image,
    label), a pure function of its args. ``scene``: the scene-like variations (default: the split's own, none for
    ``SPLITS``)."""
    rng = _sample_rng(seed, split, index)
    words, font_set = ALTERNATE_SPLIT if split in SCENE_TESTS or split == PLAIN_TEST else SPLITS[split]
    if font_set == 'alternate':
        font_set = 'heldout' if index % 2 and fonts['heldout'] else 'train'
    if split == PLAIN_TEST:
        label = sampler.sample(rng, words)
        return png_bytes(render_plain(label, rng, fonts[font_set])), label
    scene = scene or SCENE_TESTS.get(split) or SceneOptions()
    kind = scene.label_kind(rng)
    label = sampler.scene_sample(rng, words, kind) if kind else sampler.sample(rng, words)
    image = render_word(label, rng, fonts[font_set], difficulty, scene)
    return encode_image(image, rng, difficulty), label


def heldout_samples(
    n: int, seed: int, charset: str = '94_full', sets: Sequence[str] = TEST_SETS
) -> List[Tuple[bytes, str]]:
    """``n`` samples of the test splits ``sets`` in turn (default SynthWords and SynthFonts; also SynthPlain and any
    of ``SCENE_TESTS``, e.g. 'SynthScene/curved'), with held-out words and the training or held-out font families of the
    fonts this machine has (held-out sets fall back to the training fonts where there are too few to hold out):
    (encoded image, label). A seed other than a dataset's gives images no training run has seen."""
    known = (*TEST_SETS, PLAIN_TEST, *SCENE_TESTS)
    unknown = [s for s in sets if s not in known]
    if unknown or not sets:
        raise ValueError(f'not a test split: {unknown or "none given"} (known: {", ".join(known)})')
    train_fonts, held_fonts = split_fonts(list_fonts(charset))
    fonts = {'train': train_fonts, 'heldout': held_fonts or train_fonts}
    sampler = label_sampler(charset)
    return [render_sample(sets[i % len(sets)], i, sampler, fonts, seed=seed) for i in range(n)]


def _task(job: Tuple[str, int]) -> Tuple[bytes, str]:
    split = job[0]
    return render_sample(split, job[1], _CFG.sampler, _CFG.fonts, _CFG.seed, _CFG.difficulty, _CFG.scene.get(split))


def _plan(
    num_train: int, num_val: int, num_test: int, shard_size: int, heldout: bool, scene_tests: bool = False
) -> List[Tuple[str, str, range]]:
    """[(LMDB dir relative to out, split, sample indices)]."""
    shards = max(1, -(-num_train // shard_size))
    plan = [
        (f'train/synthetic/{k:03d}', 'train', range(k * shard_size, min((k + 1) * shard_size, num_train)))
        for k in range(shards)
    ]
    plan.append(('val/synthetic', 'val', range(num_val)))
    plan += [(f'test/{s}', s, range(num_test)) for s in TEST_SETS if s != 'SynthFonts' or heldout]
    plan.append((f'test/{PLAIN_TEST}', PLAIN_TEST, range(num_test)))
    plan += [(f'test/{s}', s, range(num_test)) for s in SCENE_TESTS if scene_tests]
    return plan


def make_dataset(
    out_dir: Union[str, Path],
    num_train: int = 20000,
    num_val: int = 1000,
    num_test: int = 1000,
    charset: str = '94_full',
    seed: int = 0,
    workers: Optional[int] = None,
    max_label_length: int = 25,
    difficulty: float = 0.5,
    fonts_dir: Union[str, Path, None] = None,
    system_fonts: bool = True,
    fonts: Optional[Sequence[FontSpec]] = None,
    font_holdout: float = 0.2,
    word_holdout: float = 0.1,
    shard_size: int = 50000,
    overwrite: bool = False,
    progress: bool = True,
    words: Optional[Sequence[Union[str, Path]]] = None,
    scene: float = 0.0,
    scene_share: float = 0.25,
    scene_shares: Optional[Mapping[str, float]] = None,
    scene_tests: bool = False,
) -> Dict:
    """Generates the synthetic dataset under ``out_dir`` (layout in :mod:`strhub.data.synthetic`).

    Args:
        out_dir: output folder (created); other content in it is left alone.
        num_train, num_val, num_test: samples for training, validation and each test set.
        charset: a key of ``CHARSETS`` or the characters themselves; every label is within it.
        seed: the seed; same seed (and fonts, library versions) -> same LMDB contents.
        workers: processes rendering in parallel (default: all CPUs); the result does not depend on it.
        max_label_length: longest label.
        difficulty: distortion strength, 0..1 (see :func:`render_word`).
        fonts_dir: extra font folder(s); ``system_fonts=False`` uses only these (and Pillow's built-in font).
        fonts: use exactly these fonts instead of searching (``fonts_dir``/``system_fonts`` are then ignored).
        font_holdout, word_holdout: fractions of font families and of words kept out of training.
        shard_size: samples per training LMDB.
        overwrite: replace the LMDBs/meta.json this function writes if present (otherwise that is an error).
        progress: show a tqdm progress bar.
        words: word list files, one word per line (default: the shipped English list), e.g. a list of another
            script's words for a charset that has its letters; each list is drawn from equally often.
        scene: strength 0..1 of every scene-like variation in the training and validation samples (0: none, the
            samples are then those of a dataset made without the option; ``LATER_VARIATIONS`` only where
            ``scene_shares`` names them); see :class:`SceneOptions`.
        scene_share: with ``scene``, the share of samples each variation is applied to.
        scene_shares: with ``scene``, shares of their own for some variations, e.g. ``{'curve': 0.2}`` (names:
            ``VARIATIONS`` of :mod:`~strhub.data.synthetic.scene`).
        scene_tests: also write the scene test sets ``test/SynthScene/*`` (``SCENE_TESTS``), ``num_test`` each.

    Returns:
        A summary: counts per LMDB, fonts per split, word counts, elapsed seconds and images per second.
    """
    t0 = time.time()
    out = Path(out_dir)
    # Built (and so checked) before anything is written or removed.
    if scene_shares and scene <= 0:
        raise ValueError(f'scene_shares {dict(scene_shares)} need scene > 0 (the strength of the variations)')
    training_scene = SceneOptions.uniform(scene, scene_share, scene_shares) if scene > 0 else None
    charset_str = CHARSETS.get(charset, charset)
    fonts = list(fonts) if fonts is not None else list_fonts(charset_str, fonts_dir, system_fonts)
    train_fonts, held_fonts = split_fonts(fonts, font_holdout)
    sampler = label_sampler(charset_str, max_label_length, test_frac=word_holdout, words=words)
    plan = _plan(num_train, num_val, num_test, shard_size, bool(held_fonts), scene_tests)

    targets = [out / 'train' / 'synthetic', out / 'val' / 'synthetic', out / 'meta.json']
    targets += [out / 'test' / s for s in (*TEST_SETS, PLAIN_TEST)]
    targets += [out / 'test' / 'SynthScene'] if scene_tests else []
    existing = [t for t in targets if t.exists()]
    if existing and not overwrite:
        raise FileExistsError(f'{existing[0]} exists (pass overwrite=True / --overwrite to replace it)')
    for t in existing:
        shutil.rmtree(t) if t.is_dir() else t.unlink()

    cfg = _Config(
        seed=seed,
        difficulty=difficulty,
        sampler=sampler,
        fonts={'train': train_fonts, 'heldout': held_fonts},
        scene={'train': training_scene, 'val': training_scene} if training_scene else {},
    )
    workers = max(1, workers if workers is not None else os.cpu_count() or 1)
    total = sum(len(r) for _, _, r in plan)
    counts = {}
    pool = None
    if workers > 1:  # fork shares the loaded fonts and word lists; spawn where there is no fork
        ctx = mp.get_context('fork' if 'fork' in mp.get_all_start_methods() else 'spawn')
        pool = ctx.Pool(workers, initializer=_init_worker, initargs=(cfg,))
    else:
        _init_worker(cfg)
    try:
        from tqdm import tqdm

        bar = tqdm(total=total, unit='img', disable=not progress, desc='rendering', mininterval=0.5)
        with bar:
            for rel, split, indices in plan:
                jobs = [(split, i) for i in indices]
                results = pool.imap(_task, jobs, chunksize=32) if pool else map(_task, jobs)
                counts[rel] = write_lmdb(out / rel, _progress(results, bar))
        if pool:
            pool.close()
    finally:
        if pool:
            pool.terminate()  # a no-op after close() and the last result; stops the workers on errors
            pool.join()
    elapsed = time.time() - t0

    meta = {
        'generator': f'strhub.data.synthetic v{VERSION}',
        'seed': seed,
        'charset': charset if charset in CHARSETS else charset_str,
        'max_label_length': max_label_length,
        'difficulty': difficulty,
        'counts': counts,
        'splits': {s: {'words': w, 'fonts': f} for s, (w, f) in {**SPLITS, PLAIN_TEST: ALTERNATE_SPLIT}.items()},
        'words': {'train': len(sampler.train.words), 'test': len(sampler.test.words), 'holdout': word_holdout},
        'word_lists': [Path(p).name for p in words] if words else [WORDLIST.name],
        'font_families': {k: sorted({f.family for f in v}) for k, v in cfg.fonts.items()},
        'fonts': {k: [f'{f.name} ({f.file})' for f in v] for k, v in cfg.fonts.items()},
        'versions': {'pillow': Image.__version__, 'numpy': np.__version__},
    }
    if training_scene:  # recorded only when used, so that meta.json without them is as before
        meta['scene'] = {k: v for k, v in asdict(training_scene).items() if v or k != 'shares'}
    if scene_tests:
        meta['scene_tests'] = {s: {k: v for k, v in asdict(o).items() if v} for s, o in SCENE_TESTS.items()}
    out.mkdir(parents=True, exist_ok=True)
    (out / 'meta.json').write_text(json.dumps(meta, indent=2) + '\n')
    return {**meta, 'out_dir': str(out), 'total': total, 'elapsed_s': elapsed, 'images_per_s': total / elapsed}


def _progress(results: Iterator, bar) -> Iterator:
    for r in results:
        bar.update()
        yield r
