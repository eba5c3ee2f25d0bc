"""Reading every record of an STR LMDB with its faults named, and filtering one into another: the library of
``tools/filter_lmdb.py`` (and of :mod:`strhub.data.lmdb_stats`).

Labels are judged NFC-composed (as charsets are written, see :mod:`strhub.data.charsets`) but copied as stored, and
images are copied byte for byte: a filtered LMDB holds exactly the source's records, minus the dropped ones.
"""

import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

from PIL import Image
from tqdm import tqdm

from .dataset import _BadImage, _load_image
from .lmdb_io import count_samples, image_key, iter_records, label_key, write_lmdb
from .utils import CharsetAdapter

OUTSIDE_CHARSET = 'characters outside the charset'
MAX_LISTED = 20  # unreadable records named in a report


class Sample(NamedTuple):
    """A readable record: 1-based index, label and image bytes as stored, and the image decoded (RGB)."""

    index: int
    label: str
    data: bytes
    image: Image.Image


class BadRecord(NamedTuple):
    """An unreadable record: the key at fault, a ``strhub.data.dataset.BAD_RECORD_REASONS`` key and the detail."""

    key: str
    reason: str
    detail: str

    def __str__(self) -> str:
        return f'{self.key}: {self.reason} ({self.detail})'


def read_samples(root: Union[str, Path], indices: Optional[Iterable[int]] = None) -> Iterator[Union[Sample, BadRecord]]:
    """Each record of the LMDB at ``root`` (or those at ``indices``): a :class:`Sample`, or a :class:`BadRecord`.

    Images are decoded completely (a truncated file is found here, not in training), with the reasons and details
    the datasets give.
    """
    for index, raw_label, data in iter_records(root, indices):
        if raw_label is None:
            yield BadRecord(label_key(index).decode(), 'missing_label', 'label key missing')
            continue
        try:
            label = raw_label.decode('utf-8')
        except UnicodeDecodeError:
            yield BadRecord(label_key(index).decode(), 'undecodable_label', 'label is not valid UTF-8')
            continue
        try:
            image = _load_image(data)
        except _BadImage as e:
            yield BadRecord(image_key(index).decode(), e.reason, e.detail)
            continue
        yield Sample(index, label, data, image)


def with_progress(records: Iterable, total: int, enabled: bool) -> Iterable:
    """``records`` with a progress bar on stderr when ``enabled``."""
    return tqdm(records, total=total, disable=not enabled, unit='record')


class CharsetCheck:
    """The characters a charset lacks. With ``fold_case``, a character is first case-folded as training folds labels
    (``CharsetAdapter.fold_case``: a charset without upper case lower-cases, one without lower case upper-cases), so
    that ``Hello`` fits ``36_lowercase``; without it the comparison is exact."""

    def __init__(self, charset: str, fold_case: bool = False) -> None:
        self.charset = charset
        self._chars = frozenset(charset)
        self._fold = CharsetAdapter(charset).fold_case if fold_case else str

    def missing(self, char: str) -> bool:
        return any(c not in self._chars for c in self._fold(char))  # folding may give two characters ('İ')

    def outside(self, text: str) -> List[str]:
        """The characters of ``text`` (NFC-composed) the charset lacks, in order, as written in ``text``."""
        return [c for c in unicodedata.normalize('NFC', text) if self.missing(c)]

    def unused(self, seen: Iterable[str]) -> str:
        """The characters of the charset that none of the characters ``seen`` gives (after folding)."""
        folded = {f for c in seen for f in self._fold(c)}
        return ''.join(c for c in self.charset if c not in folded)


def label_length(label: str) -> int:
    """Characters as a charset counts them: NFC-composed, whitespace included."""
    return len(unicodedata.normalize('NFC', label))


class Criteria:
    """What :func:`filter_lmdb` keeps. A record is dropped for the first criterion it fails, in the order of
    :attr:`reasons`: label length, charset, width, height, aspect ratio (width / height).

    Args:
        charset: drop labels with a character outside it (None: any character).
        fold_case: compare case-folded as training does (see :class:`CharsetCheck`).
        min_label_length, max_label_length: label length bounds (:func:`label_length`); None: no upper bound.
        min_width, min_height: image size bounds in pixels (0: none).
        min_aspect, max_aspect: width / height bounds (None: none).

    Raises:
        ValueError: a negative bound, an empty range or a non-positive aspect ratio.
    """

    def __init__(
        self,
        charset: Optional[str] = None,
        fold_case: bool = False,
        min_label_length: int = 1,
        max_label_length: Optional[int] = None,
        min_width: int = 0,
        min_height: int = 0,
        min_aspect: Optional[float] = None,
        max_aspect: Optional[float] = None,
    ) -> None:
        for name, value in (('min_label_length', min_label_length), ('max_label_length', max_label_length)):
            if value is not None and value < 0:
                raise ValueError(f'{name} must be >= 0 (got {value})')
        for name, value in (('min_width', min_width), ('min_height', min_height)):
            if value < 0:
                raise ValueError(f'{name} must be >= 0 (got {value})')
        for name, value in (('min_aspect', min_aspect), ('max_aspect', max_aspect)):
            if value is not None and not value > 0:
                raise ValueError(f'{name} must be > 0 (got {value})')
        if max_label_length is not None and max_label_length < min_label_length:
            raise ValueError(f'max_label_length {max_label_length} < min_label_length {min_label_length}')
        if None not in (min_aspect, max_aspect) and max_aspect < min_aspect:
            raise ValueError(f'max_aspect {max_aspect:g} < min_aspect {min_aspect:g}')
        self.charset_check = CharsetCheck(charset, fold_case) if charset else None
        # (reason, fails(label length, label, width, height)) of each criterion set, in the order they are checked
        tests = []
        if min_label_length > 0:
            tests.append((f'label length < {min_label_length}', lambda n, t, w, h: n < min_label_length))
        if max_label_length is not None:
            tests.append((f'label length > {max_label_length}', lambda n, t, w, h: n > max_label_length))
        if self.charset_check:
            tests.append((OUTSIDE_CHARSET, lambda n, t, w, h: bool(self.charset_check.outside(t))))
        if min_width:
            tests.append((f'width < {min_width}', lambda n, t, w, h: w < min_width))
        if min_height:
            tests.append((f'height < {min_height}', lambda n, t, w, h: h < min_height))
        if min_aspect is not None:
            tests.append((f'aspect ratio < {min_aspect:g}', lambda n, t, w, h: w / h < min_aspect))
        if max_aspect is not None:
            tests.append((f'aspect ratio > {max_aspect:g}', lambda n, t, w, h: w / h > max_aspect))
        self._tests = tests
        self.reasons = [reason for reason, _ in tests]

    def reject(self, label: str, width: int, height: int) -> Optional[str]:
        """The first criterion the record fails, or None to keep it."""
        n = label_length(label)
        return next((reason for reason, fails in self._tests if fails(n, label, width, height)), None)


def format_table(headers: Sequence[str], rows: Iterable[Sequence[object]], left: Sequence[int] = (0,)) -> str:
    """Plain text: the columns ``left`` left-aligned, the others right-aligned, a rule under the header. Widths count
    terminal cells (a CJK character takes two, a combining mark none)."""
    cells = [[str(c) for c in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(_cells(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: List[str]) -> str:
        pads = [' ' * (w - _cells(c)) for c, w in zip(row, widths)]
        return '  '.join(c + p if i in left else p + c for i, (c, p) in enumerate(zip(row, pads))).rstrip()

    rule = '  '.join('-' * w for w in widths).rstrip()
    return '\n'.join([line(cells[0]), rule] + [line(row) for row in cells[1:]])


def _cells(text: str) -> int:
    return sum(0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in 'WF' else 1 for c in text)


def list_bad_records(bad_records: Sequence[BadRecord], max_listed: int = MAX_LISTED) -> List[str]:
    """One indented line per unreadable record, the first ``max_listed`` (0: all), then how many more."""
    shown = bad_records[:max_listed] if max_listed > 0 else bad_records
    more = len(bad_records) - len(shown)
    return [f'  {r}' for r in shown] + ([f'  ... and {more} more'] if more else [])


def count_chars(chars: Counter, limit: int = 10) -> str:
    """``'ж' 17, 'ë' 2`` for the ``limit`` most common, then how many more."""
    listed = ', '.join(f'{c!r} {n}' for c, n in chars.most_common(limit))
    return listed + (f' and {len(chars) - limit} more' if len(chars) > limit else '')


@dataclass
class FilterReport:
    """What :func:`filter_lmdb` did: records read, kept, dropped by criterion, and the unreadable ones."""

    source: str
    reasons: List[str]  # the criteria applied, in order
    total: int = 0
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)  # criterion -> records
    bad_records: List[BadRecord] = field(default_factory=list)
    outside_chars: Counter = field(default_factory=Counter)  # characters that made labels be dropped

    def format(self, max_listed: int = MAX_LISTED) -> str:
        lines = [f'{self.source}: {self.kept} of {self.total} records kept.']
        unreadable = Counter(r.reason for r in self.bad_records)
        rows = [('kept', self.kept)] + [(r, self.dropped[r]) for r in self.reasons]
        rows += [(f'unreadable: {r}', n) for r, n in sorted(unreadable.items())]
        rows.append(('total', self.total))
        lines.append(format_table(('', 'records', '%'), [(r, n, _percent(n, self.total)) for r, n in rows]))
        if self.outside_chars:
            lines.append(f'Characters outside the charset: {count_chars(self.outside_chars)}')
        if self.bad_records:
            lines.append(f'Unreadable records ({len(self.bad_records)}):')
            lines += list_bad_records(self.bad_records, max_listed)
        return '\n'.join(lines)


def _percent(n: int, total: int) -> str:
    return f'{100 * n / total:.1f}' if total else '-'


def filter_lmdb(
    source: Union[str, Path], output: Union[str, Path], criteria: Criteria, progress: bool = False
) -> FilterReport:
    """Writes the readable records of ``source`` that meet ``criteria`` to a new STR LMDB at ``output``, renumbered
    from 1 in their order, labels and image bytes unchanged. ``output`` is written in place, even when nothing is
    kept (``num-samples`` 0): the tool builds it in a temporary folder and moves it into place.

    Raises:
        FileNotFoundError, InvalidLmdbError: ``source`` is not a readable STR LMDB.
    """
    total = count_samples(source)
    report = FilterReport(source=str(source), reasons=criteria.reasons, total=total)

    def kept() -> Iterator[Tuple[bytes, str]]:
        for record in with_progress(read_samples(source), total, progress):
            if isinstance(record, BadRecord):
                report.bad_records.append(record)
                continue
            reason = criteria.reject(record.label, *record.image.size)
            if reason is None:
                report.kept += 1
                yield record.data, record.label
                continue
            report.dropped[reason] += 1
            if reason == OUTSIDE_CHARSET:
                report.outside_chars.update(criteria.charset_check.outside(record.label))

    write_lmdb(output, kept())
    return report
