"""A built-in synthetic scene-text dataset: word renderer, label sampler and LMDB dataset builder.

It needs no download: words come from the shipped ``wordlist.txt`` (SCOWL subset) plus random strings, and text is
rendered with the TTF/OTF fonts found on the machine (and Pillow's built-in scalable font). It exists so that the
whole pipeline (training, validation, tests) can run end to end anywhere, and so that a tiny model can be trained on
it quickly.

Modules, by job: :mod:`~strhub.data.synthetic.fonts` (finding, checking and splitting fonts),
:mod:`~strhub.data.synthetic.labels` (word list and label sampler), :mod:`~strhub.data.synthetic.render` (a word
as an image), :mod:`~strhub.data.synthetic.scene` and :mod:`~strhub.data.synthetic.effects` (the scene-like
variations and their test sets), :mod:`~strhub.data.synthetic.plain` (the plain renderer of the SynthPlain test set)
and :mod:`~strhub.data.synthetic.build` (samples, splits and the LMDBs).

Layout written by :func:`make_dataset` (every LMDB is in the public STR format of :mod:`strhub.data.lmdb_io`)::

    <out>/meta.json                        how it was made: seed, charset, counts, fonts per split, versions
    <out>/train/synthetic/000/data.mdb     training shards of at most ``shard_size`` samples each (000, 001, ...)
    <out>/val/synthetic/data.mdb           training distribution (training words and fonts), fresh samples
    <out>/test/SynthWords/data.mdb         held-out words, fonts seen in training
    <out>/test/SynthFonts/data.mdb         held-out words AND held-out font families (not written with < 2 fonts)
    <out>/test/SynthPlain/data.mdb         held-out words drawn plainly by another renderer (:mod:`~.plain`), even
                                           samples in training font families, odd samples in held-out ones
    <out>/test/SynthScene/<name>/data.mdb  with ``scene_tests``: one scene-like variation each (curved, occluded, ...)
                                           and a mix; held-out words, even samples in training font families, odd
                                           samples in held-out ones

Splits: the word list is split by a hash of each word (words of 1-2 letters always stay in training), and fonts by
a hash of their family name, so both splits are stable and need no stored state. Training labels are rejected if
any of their letter runs is a held-out word, so test labels never occur in training.

Determinism: sample ``i`` of split ``s`` is drawn from ``numpy.random.default_rng([seed, crc32(s), i])`` only, so the
LMDB contents are byte-identical for the same seed, fonts, Pillow and NumPy versions, whatever the number of workers.
"""

from strhub.data.synthetic.build import PLAIN_TEST, SPLITS, TEST_SETS, heldout_samples, make_dataset, render_sample
from strhub.data.synthetic.fonts import FontSpec, check_font, find_font_files, list_fonts, split_fonts
from strhub.data.synthetic.labels import label_sampler, load_words, split_words
from strhub.data.synthetic.render import render_word
from strhub.data.synthetic.scene import SCENE_TESTS, SceneOptions

__all__ = [
    'FontSpec',
    'PLAIN_TEST',
    'SCENE_TESTS',
    'SPLITS',
    'SceneOptions',
    'TEST_SETS',
    'check_font',
    'find_font_files',
    'label_sampler',
    'list_fonts',
    'load_words',
    'make_dataset',
    'render_sample',
    'render_word',
    'split_fonts',
    'split_words',
    'heldout_samples',
]
