"""Labels of the synthetic dataset: the shipped word list, its stable train/test split, and the sampler that mixes
words, numbers, random strings and punctuation into labels."""

import re
import string
import unicodedata
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from strhub.data.utils import CHARSETS

WORDLIST = Path(__file__).resolve().parents[1] / 'wordlist.txt'  # strhub/data/wordlist.txt (setup.py package_data)
# Target word lengths, roughly those of scene-text words: mostly 3-8 characters.
_LEN_WEIGHTS = np.array([2, 5, 10, 13, 14, 13, 11, 9, 7, 5, 4, 2.5, 1.5, 1, 0.6, 0.4, 0.2, 0.1, 0.1, 0.1])
_LEN_WEIGHTS = _LEN_WEIGHTS / _LEN_WEIGHTS.sum()


def load_words(path: Union[str, Path] = WORDLIST) -> List[str]:
    """The words of a word list (default: the shipped English one): one per line, UTF-8, NFC-composed, ``#``
    comments and blank lines skipped.

    Raises:
        ValueError: the file cannot be read (naming it).
    """
    try:
        text = Path(path).read_text(encoding='utf-8-sig')
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f'cannot read word list {path}: {e}') from None
    lines = (unicodedata.normalize('NFC', line.strip()) for line in text.splitlines())
    return [w for w in lines if w and not w.startswith('#')]


def split_words(words: Iterable[str], test_frac: float = 0.1) -> Tuple[List[str], List[str]]:
    """Deterministic (train, test) split of lower-cased, deduplicated words by a hash of each word.

    Words of 1-2 letters always go to training: they are too few to hold out and they occur inside random strings.
    """
    words = sorted({w.lower() for w in words})
    is_test = [len(w) >= 3 and zlib.crc32(w.encode()) % 10000 < test_frac * 10000 for w in words]
    return [w for w, t in zip(words, is_test) if not t], [w for w, t in zip(words, is_test) if t]


class _WordPool:
    """Words of one split bucketed by length, so a target length can be drawn first (realistic lengths)."""

    def __init__(self, words: Sequence[str], charset: str, max_len: int) -> None:
        cs = set(charset) | set(charset.lower())  # case is applied later
        self.words = [w for w in words if 1 <= len(w) <= max_len and set(w) <= cs]
        self.by_len: Dict[int, List[str]] = {}
        for w in self.words:
            self.by_len.setdefault(len(w), []).append(w)

    def draw(self, rng: np.random.Generator) -> str:
        n = int(rng.choice(len(_LEN_WEIGHTS), p=_LEN_WEIGHTS)) + 1
        bucket = self.by_len.get(n) or self.words
        return bucket[int(rng.integers(len(bucket)))]


# Greek in capitals drops the accents (ΕΞΟΔΟΣ, not ΈΞΟΔΟΣ); a capitalised word keeps its accent (Έξοδος).
_GREEK_CAPS = str.maketrans('ΆΈΉΊΌΎΏ', 'ΑΕΗΙΟΥΩ')
# In a mix of cases, capital I and small l are one shape in most sans-serif fonts: a person could not read them.
_NO_IL = str.maketrans('Il', 'iL')

# Label templates; '{}' is a word, the others are number parts (see LabelSampler.number).
_PUNCT_WRAPS = tuple(
    r"""{}. {}, {}! {}? {}: {}; "{}" '{}' ({}) {}'s #{} @{} {}-{} {}/{} {}&{} {}_{} www.{}.com {}@{}.com {}... [{}]
    {}* <{}> {}+ ~{} {}|{} {{{}}} {}={} {}\{} ^{} {}` ${} {}%""".split()
)
_NUMBER_FORMS = tuple(
    """{d} {d} {d} ${d}.{c} {h}:{m} {d}.{c} {c}% {y}-{c}-{c} +{d} {t},{k} #{d} ({d}) {c}/{c}/{y} {d}x{d} {d}km {d}kg
    No.{d} {d}th {c}:{c}""".split()
)
# Alphanumeric codes (number plates, serial and part numbers): 'A' is a random letter, '9' a random digit; a
# separator outside the charset is dropped ('AB12 CDE' is 'AB12CDE' in a charset without the space).
_CODE_FORMS = (
    'AA99 AAA',
    'AA-999-AA',
    'AA-9999',
    'AAA-9999',
    '9AAA999',
    'A999 AAA',
    'AAA 999',
    'SN-9999-AA',
    'S/N 9999999',
    'A9A 9A9',
    '9999-9999',
    'AA999999',
    'AAA99999',
    '99-AA-99',
    'A9-99A',
    'REF 9999',
)


class _WordLists:
    """Several word lists (e.g. one per language): a word is drawn from a list chosen uniformly, so that a short
    list of a new script is drawn as often as the 50,000 English words."""

    def __init__(self, pools: Sequence[_WordPool]) -> None:
        self.pools = [p for p in pools if p.words]
        if not self.pools:
            raise ValueError('no word of the word lists fits the charset')

    @property
    def words(self) -> List[str]:
        return [w for p in self.pools for w in p.words]

    def pick(self, rng: np.random.Generator) -> _WordPool:
        if len(self.pools) == 1:  # no draw: one list gives the samples it gave before there were several
            return self.pools[0]
        return self.pools[int(rng.integers(len(self.pools)))]

    def draw(self, rng: np.random.Generator) -> str:
        return self.pick(rng).draw(rng)


@dataclass
class LabelSampler:
    charset: str
    max_len: int
    train: _WordLists
    test: _WordLists
    test_set: frozenset

    def __post_init__(self) -> None:
        cs = self.charset
        self.has_lower = any(c.islower() for c in cs)
        self.has_upper = any(c.isupper() for c in cs)
        self.punct = ''.join(c for c in cs if c in string.punctuation)
        self.alnum = ''.join(c for c in cs if c.isalnum())
        self.chars = ''.join(c for c in cs if not c.isspace())
        kinds = {'word': 0.55, 'compound': 0.05, 'number': 0.1, 'alnum': 0.15, 'random': 0.05, 'punct': 0.1}
        if not self.punct:
            del kinds['punct']
        self.kinds = list(kinds)
        self.kind_p = np.array(list(kinds.values())) / sum(kinds.values())

    def case(self, word: str, rng: np.random.Generator) -> str:
        if not self.has_upper:
            return word.lower()
        if not self.has_lower:
            return word.upper()
        r = rng.random()
        return word.lower() if r < 0.5 else word.capitalize() if r < 0.8 else word.upper().translate(_GREEK_CAPS)

    def digits(self, rng: np.random.Generator, lo: int, hi: int) -> str:
        return str(int(rng.integers(10 ** (lo - 1) if lo > 1 else 0, 10**hi)))

    def number(self, rng: np.random.Generator) -> str:
        form = _NUMBER_FORMS[int(rng.integers(len(_NUMBER_FORMS)))] if self.punct else '{d}'
        return form.format(
            d=self.digits(rng, 1, int(rng.integers(1, 7))),
            c=f'{int(rng.integers(100)):02d}',
            h=int(rng.integers(24)),
            m=f'{int(rng.integers(60)):02d}',
            y=int(rng.integers(1900, 2040)),
            t=int(rng.integers(1, 1000)),
            k=f'{int(rng.integers(1000)):03d}',
        )

    def punctuated(self, lists: _WordLists, rng: np.random.Generator) -> str:
        form = _PUNCT_WRAPS[int(rng.integers(len(_PUNCT_WRAPS)))]
        pool = lists.pick(rng)  # the words of one label from one list (language)
        return form.format(*(self.case(pool.draw(rng), rng) for _ in range(form.count('{}'))))

    def random_string(self, rng: np.random.Generator, chars: str) -> str:
        n = min(int(rng.geometric(0.2)), 12)
        if chars is self.alnum and rng.random() < 0.5:  # product-code look: upper-case letters and digits
            chars = ''.join(c for c in chars if not c.islower()) or chars
        return ''.join(chars[i] for i in rng.integers(len(chars), size=n))

    def code(self, rng: np.random.Generator) -> str:
        """A plate-, serial- or part-number-like code: capital letters (small ones without capitals) and digits."""
        letters = [c for c in self.alnum if c.isascii() and c.isalpha() and (c.isupper() or not self.has_upper)]
        form = _CODE_FORMS[int(rng.integers(len(_CODE_FORMS)))]
        if not self.has_upper:
            form = form.lower()
        out = []
        for c in form:
            if c in 'Aa':
                out.append(letters[int(rng.integers(len(letters)))] if letters else str(int(rng.integers(10))))
            elif c == '9':
                out.append(str(int(rng.integers(10))))
            elif c in self.charset:
                out.append(c)
        return ''.join(out)

    def long_word(self, rng: np.random.Generator, words: str) -> Optional[str]:
        """A word of 12-15 characters (at most ``max_len``) of ``words`` ('train' or 'test'), or None if none.

        Two training labels in three are compounds of two training words of 12-15 characters together ('keyboardfan'
        + 's'), not one of the few thousand long dictionary words: a small model learns those by heart and then reads
        an unseen long word as the nearest one it knows (a run trained on dictionary long words alone read 25% of the
        held-out ones, one or two letters off). Test labels stay dictionary words."""
        hi = min(15, self.max_len)
        pool = (self.test if words == 'test' else self.train).pick(rng)
        if words == 'train' and rng.random() < 2 / 3:
            first = pool.draw(rng)
            fits = [n for n in range(max(1, 12 - len(first)), hi - len(first) + 1) if pool.by_len.get(n)]
            if fits:
                second = pool.by_len[fits[int(rng.integers(len(fits)))]]
                a, b = self.case(first, rng), self.case(second[int(rng.integers(len(second)))], rng)
                return a + (b.capitalize() if a[:1].isupper() else b)
        bucket = [w for n in range(12, hi + 1) for w in pool.by_len.get(n, [])]
        return self.case(bucket[int(rng.integers(len(bucket)))], rng) if bucket else None

    def caps(self, label: str, rng: np.random.Generator) -> str:
        """``label`` in capitals (70%) or in a random mix of cases per letter, where the charset has both."""
        if not (self.has_upper and self.has_lower):
            return label
        if rng.random() < 0.7:
            return label.upper().translate(_GREEK_CAPS)
        flips = rng.random(len(label)) < 0.5
        if flips.all() or not flips.any():  # a mix, not one case
            flips[int(rng.integers(len(label)))] ^= True
        mixed = ''.join(c.upper() if f else c.lower() for c, f in zip(label, flips)).translate(_NO_IL)
        return mixed if mixed != mixed.lower() else label.upper().translate(_GREEK_CAPS)

    def scene_sample(self, rng: np.random.Generator, words: str, kind: Optional[str]) -> str:
        """A label of a scene-like ``kind`` ('codes', 'long', 'caps'; None: :meth:`sample`), within the same rules:
        charset, length, no held-out word in training labels. Falls back to :meth:`sample` where a kind cannot be
        drawn (no long word in the lists or within ``max_len``)."""
        for _ in range(100):
            if kind == 'codes':
                label = self.code(rng)
            elif kind == 'long':
                label = self.long_word(rng, words)
            else:
                label = self.sample(rng, words)
                label = self.caps(label, rng) if kind == 'caps' else label
            if label is None:
                break
            if 1 <= len(label) <= self.max_len and set(label) <= set(self.charset):
                if words == 'test' or not self.leaks(label):
                    return label
        return self.sample(rng, words)

    def leaks(self, label: str) -> bool:
        return any(run in self.test_set for run in re.findall(r'[^\W\d_]{3,}', label.lower()))  # letters, any script

    def sample(self, rng: np.random.Generator, words: str = 'train') -> str:
        """A label of ``words`` ('train' or 'test' words); a training label never contains a test word."""
        for _ in range(1000):
            if words == 'test':
                label = self.punctuated(self.test, rng) if self.punct and rng.random() < 0.15 else None
                label = label or self.case(self.test.draw(rng), rng)
            else:
                kind = self.kinds[int(rng.choice(len(self.kinds), p=self.kind_p))]
                if kind == 'word':
                    label = self.case(self.train.draw(rng), rng)
                elif kind == 'compound':  # e.g. 'hotdog', 'HotDog'
                    pool = self.train.pick(rng)
                    a, b = self.case(pool.draw(rng), rng), self.case(pool.draw(rng), rng)
                    label = a + (b.capitalize() if a[:1].isupper() else b)
                elif kind == 'number':
                    label = self.number(rng)
                elif kind == 'alnum':
                    label = self.random_string(rng, self.alnum)
                elif kind == 'random':  # every character of the charset shows up in training
                    label = self.random_string(rng, self.chars)
                else:
                    label = self.punctuated(self.train, rng)
            if 1 <= len(label) <= self.max_len and set(label) <= set(self.charset):
                if words == 'test' or not self.leaks(label):
                    return label
        raise RuntimeError(f'cannot sample a label within {self.charset!r} of length <= {self.max_len}')


def label_sampler(
    charset: str = '94_full',
    max_label_length: int = 25,
    test_frac: float = 0.1,
    words: Optional[Sequence[Union[str, Path]]] = None,
) -> LabelSampler:
    """A label sampler of word lists: ``.sample(rng)`` draws the training mix (words in three cases, compounds,
    numbers, random strings, punctuation), ``.sample(rng, 'test')`` held-out words (``test_frac`` of each list's
    words). Labels are always within ``charset`` (a key of ``CHARSETS`` or the characters) and of length
    1..``max_label_length``.

    Args:
        words: word list files (default: the shipped English list); a word is drawn from one of them chosen
            uniformly, and only words that fit the charset are used.

    Raises:
        ValueError: a word list cannot be read, or no word of any list fits the charset.
    """
    charset = CHARSETS.get(charset, charset)
    train, test = zip(*(split_words(load_words(p), test_frac) for p in (words or [WORDLIST])))
    return LabelSampler(
        charset=charset,
        max_len=max_label_length,
        train=_WordLists([_WordPool(w, charset, max_label_length) for w in train]),
        test=_WordLists([_WordPool(w, charset, max_label_length) for w in test]),
        test_set=frozenset(w for ws in test for w in ws),
    )
