"""What an STR LMDB holds: counts, label lengths, characters, image sizes and unreadable records, as tables and
JSON, and a contact sheet of random samples; the library of ``tools/lmdb_stats.py``."""

import random
import unicodedata
from array import array
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

from PIL import Image, ImageDraw

from .lmdb_io import count_samples
from .lmdb_tools import (
    MAX_LISTED,
    BadRecord,
    CharsetCheck,
    count_chars,
    format_table,
    label_length,
    list_bad_records,
    read_samples,
    with_progress,
)

# Contact sheet cells: the image scaled to fit IMAGE_HEIGHT (and the cell's width), its label on a line below.
CELL_WIDTH, IMAGE_HEIGHT, LABEL_HEIGHT, PAD, FONT_SIZE = 160, 48, 20, 4, 13
STATS = ('min', 'median', 'max')  # of the image sizes
BAR_WIDTH = 40  # characters of the longest bar of the label-length histogram


@dataclass
class LmdbStats:
    """The numbers of one LMDB; label and image numbers are over its readable records."""

    root: str
    num_samples: int
    charset_check: Optional[CharsetCheck] = None
    readable: array = field(default_factory=lambda: array('q'))  # 1-based indices (compact for millions)
    bad_records: List[BadRecord] = field(default_factory=list)
    label_lengths: Counter = field(default_factory=Counter)  # length -> records
    chars: Counter = field(default_factory=Counter)  # character (NFC) -> occurrences
    labels_outside: int = 0  # labels with a character outside the charset
    sizes: Counter = field(default_factory=Counter)  # (width, height) -> records

    @property
    def outside_chars(self) -> Counter:
        check = self.charset_check
        return Counter({c: n for c, n in self.chars.items() if check and check.missing(c)})

    def image_summary(self) -> Dict[str, Dict[str, float]]:
        dims = {'width': Counter(), 'height': Counter(), 'aspect_ratio': Counter()}
        for (w, h), n in self.sizes.items():
            dims['width'][w] += n
            dims['height'][h] += n
            dims['aspect_ratio'][w / h] += n
        return {k: _summary(v) for k, v in dims.items()}

    def to_dict(self) -> Dict[str, Any]:
        """Plain data for JSON: every count (characters most common first, all unreadable records listed)."""
        outside = self.outside_chars
        return dict(
            lmdb=self.root,
            records=self.num_samples,
            readable=len(self.readable),
            unreadable=dict(
                count=len(self.bad_records),
                by_reason=dict(Counter(r.reason for r in self.bad_records)),
                records=[r._asdict() for r in self.bad_records],
            ),
            label_length=dict(
                _summary(self.label_lengths), histogram={str(k): v for k, v in sorted(self.label_lengths.items())}
            ),
            characters=dict(
                distinct=len(self.chars),
                total=sum(self.chars.values()),
                counts=dict(self.chars.most_common()),
                charset=self.charset_check.charset if self.charset_check else None,
                outside_charset=dict(outside.most_common()),
                labels_with_outside_characters=self.labels_outside,
                charset_unused=self.charset_check.unused(self.chars) if self.charset_check else None,
            ),
            image_size=self.image_summary(),
        )

    def format(self, top: int = 20, rare: int = 10, max_listed: int = MAX_LISTED) -> str:
        """The report as tables: ``top`` most common and ``rare`` rarest characters, ``max_listed`` unreadable
        records named (0: all)."""
        lines = [
            f'LMDB {self.root}: {self.num_samples} records, {len(self.readable)} readable, '
            f'{len(self.bad_records)} unreadable'
        ]
        if self.bad_records:
            by_reason = Counter(r.reason for r in self.bad_records)
            lines.append('Unreadable records (' + ', '.join(f'{r}: {n}' for r, n in sorted(by_reason.items())) + '):')
            lines += list_bad_records(self.bad_records, max_listed)
        if not self.readable:
            return '\n'.join(lines)
        lines += ['', self._format_lengths(), '', self._format_chars(top, rare), '']
        rows = [
            ('aspect (w/h)' if k == 'aspect_ratio' else k, *(_number(v[s], k == 'aspect_ratio') for s in STATS))
            for k, v in self.image_summary().items()
        ]
        lines.append(format_table(('image size', *STATS), rows))
        return '\n'.join(lines)

    def _format_lengths(self) -> str:
        s = _summary(self.label_lengths)
        total, peak = len(self.readable), max(self.label_lengths.values())
        rows = [
            (n, c, f'{100 * c / total:.1f}', '#' * max(1, round(BAR_WIDTH * c / peak)))
            for n, c in sorted(self.label_lengths.items())
        ]
        title = f'Label length: min {s["min"]}, median {_number(s["median"])}, mean {s["mean"]:.2f}, max {s["max"]}'
        return title + '\n' + format_table(('length', 'records', '%', ''), rows, left=(3,))

    def _format_chars(self, top: int, rare: int) -> str:
        total, outside = sum(self.chars.values()), self.outside_chars
        title = f'Characters: {len(self.chars)} distinct, {total} in all'
        if self.charset_check:
            title += f'; {len(outside)} outside the charset (flagged *), in {self.labels_outside} labels' + (
                f': {count_chars(outside)}' if outside else ''
            )
            unused = self.charset_check.unused(self.chars)
            if unused:
                title += f'\nCharset characters never seen ({len(unused)}): {unused}'
        # Most common first, ties in code point order, so that the tables do not depend on the records' order.
        ranked = sorted(self.chars.items(), key=lambda item: (-item[1], item[0]))

        def table(items) -> str:
            flagged = self.charset_check is not None
            rows = []
            for c, n in items:
                row = [_show(c), f'U+{ord(c):04X}', n, f'{100 * n / total:.2f}']
                rows.append(row + ['*' if c in outside else ''] if flagged else row)
            headers = ['char', 'code', 'count', '%'] + (['outside'] if flagged else [])
            return format_table(headers, rows, left=(0, 4))

        if len(ranked) <= top + rare:
            return f'{title}\nAll {len(ranked)}:\n{table(ranked)}'
        parts = [title]
        if top:
            parts.append(f'Most common {top}:\n{table(ranked[:top])}')
        if rare:
            parts.append(f'Rarest {rare}:\n{table(ranked[-rare:][::-1])}')
        return '\n'.join(parts)


def _show(char: str) -> str:
    return char if char.isprintable() and not char.isspace() else repr(char)


def _number(value: float, ratio: bool = False) -> str:
    return f'{value:.2f}' if ratio else f'{value:g}'


def _summary(counts: Counter) -> Dict[str, float]:
    """min, median, mean and max of values given as value -> how many times."""
    n = sum(counts.values())
    if not n:
        return dict(min=None, median=None, mean=None, max=None)
    values = sorted(counts.items())

    def at(rank: int) -> float:  # the value at a 0-based rank in sorted order
        seen = 0
        for value, count in values:
            seen += count
            if rank < seen:
                return value

    mean = sum(v * c for v, c in values) / n
    return dict(min=values[0][0], median=(at((n - 1) // 2) + at(n // 2)) / 2, mean=mean, max=values[-1][0])


def lmdb_stats(
    root: Union[str, Path], charset_check: Optional[CharsetCheck] = None, progress: bool = False
) -> LmdbStats:
    """Reads every record of the LMDB at ``root`` (images decoded) and counts what it holds.

    Raises:
        FileNotFoundError, InvalidLmdbError: ``root`` is not a readable STR LMDB.
    """
    stats = LmdbStats(root=str(root), num_samples=count_samples(root), charset_check=charset_check)
    for record in with_progress(read_samples(root), stats.num_samples, progress):
        if isinstance(record, BadRecord):
            stats.bad_records.append(record)
            continue
        stats.readable.append(record.index)
        stats.label_lengths[label_length(record.label)] += 1
        stats.chars.update(unicodedata.normalize('NFC', record.label))
        if charset_check and charset_check.outside(record.label):
            stats.labels_outside += 1
        stats.sizes[record.image.size] += 1
    return stats


def sample_indices(stats: LmdbStats, samples: int, seed: int = 0) -> List[int]:
    """``samples`` readable record indices drawn at random (all when fewer), the same for a seed; in LMDB order."""
    rng = random.Random(seed)
    picks = rng.sample(range(len(stats.readable)), min(samples, len(stats.readable)))
    return sorted(stats.readable[i] for i in picks)


def sheet_size(samples: int, columns: int) -> tuple:
    """(width, height) in pixels of a contact sheet of ``samples`` cells, ``columns`` to a row."""
    columns = min(columns, samples)
    return columns * CELL_WIDTH, -(-samples // columns) * (IMAGE_HEIGHT + LABEL_HEIGHT)


def contact_sheet(root: Union[str, Path], indices: Sequence[int], columns: int = 8) -> Image.Image:
    """The records at ``indices`` (readable ones) in a grid, each image over its label.

    Raises:
        ValueError: no index given, or ``columns`` < 1.
    """
    if not indices or columns < 1:
        raise ValueError('a contact sheet needs at least one sample and one column')
    samples = [s for s in read_samples(root, indices) if not isinstance(s, BadRecord)]
    sheet = Image.new('RGB', sheet_size(len(samples), columns), 'white')
    draw = ImageDraw.Draw(sheet)
    font = _label_font([s.label for s in samples])
    box_w, box_h = CELL_WIDTH - 2 * PAD, IMAGE_HEIGHT - 2 * PAD
    for i, sample in enumerate(samples):
        x, y = (i % columns) * CELL_WIDTH, (i // columns) * (IMAGE_HEIGHT + LABEL_HEIGHT)
        image = sample.image
        scale = min(box_w / image.width, box_h / image.height)  # small crops are enlarged too, to be seen
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        sheet.paste(
            image.resize(size, Image.BILINEAR), (x + (CELL_WIDTH - size[0]) // 2, y + PAD + (box_h - size[1]) // 2)
        )
        draw.text(
            (x + PAD, y + IMAGE_HEIGHT), _fit(sample.label or '(empty label)', font, box_w), fill='black', font=font
        )
        draw.rectangle((x, y, x + CELL_WIDTH - 1, y + IMAGE_HEIGHT + LABEL_HEIGHT - 1), outline=(210, 210, 210))
    return sheet


def _fit(text: str, font, width: int) -> str:
    if font.getlength(text) <= width:
        return text
    while text and font.getlength(text + '...') > width:
        text = text[:-1]
    return text + '...'


def _label_font(labels: Sequence[str]):
    """A regular sans font that draws every character of ``labels`` when one is installed (Greek, Cyrillic, CJK
    labels need one), else Pillow's built-in font."""
    from .synthetic.fonts import list_fonts, load_font  # the renderer's package: imported only to draw

    chars = ''.join(sorted({c for label in labels for c in label if not c.isspace()}))
    fonts = [f for f in list_fonts(chars) if f.path] if chars else []
    if not fonts:
        return load_font(None, FONT_SIZE)
    best = min(fonts, key=lambda f: (f.name != f.family, 'Sans' not in f.family, 'Mono' in f.family, f.name))
    return load_font(best.path, FONT_SIZE)
