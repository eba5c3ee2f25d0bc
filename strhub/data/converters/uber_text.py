"""Uber-Text 1.0 (https://s3-us-west-2.amazonaws.com/uber-common-public/ubertext/index.html): street-level images
with one ground-truth text file per image.

The published page describes the content (text region polygons, their transcriptions and one of 9 categories such
as business name, street name or street number) but not the file layout, and no copy of the files could be checked.
What is read, deliberately tolerant:

- ANNOTATIONS is a folder of ``.txt`` files (it may be the image folder itself); ``truth_<stem>.txt`` or
  ``<stem>.txt`` belongs to the image ``<stem>.*`` under IMAGE_ROOT (preferably in the same sub-folder: the release
  splits each set into ``1Kx1K`` and ``4Kx4K`` folders);
- each non-blank line is one word: the polygon's coordinates ``x1 y1 x2 y2 ...`` (spaces or commas, at least 3
  points), then, after a tab, the transcription (surrounding double quotes removed) and optionally, after another
  tab, the category (ignored). A line without a tab is read as the leading numbers followed by the transcription;
- ``###`` or an empty transcription marks an unreadable word, skipped.

If your copy differs, :func:`parse_line` is the one function to adapt.
"""

import re
from pathlib import Path
from typing import Iterator, Optional

from strhub.data.converters.base import ImageEntry, Word, flat_points, make_word, per_image_files, read_lines

_NUMBER = re.compile(r'^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$')


def parse_line(line: str) -> Word:
    """One line of an Uber-Text ground-truth file as a :class:`Word` (see the module docstring)."""
    if '\t' in line:
        coords, text = line.split('\t')[:2]
        tokens = coords.replace(',', ' ').split()
    else:
        tokens = line.replace(',', ' ').split()
        n = next((i for i, t in enumerate(tokens) if not _NUMBER.match(t)), len(tokens))
        n -= n % 2  # coordinates come in pairs: an odd number left is a numeric transcription ("15")
        tokens, text = tokens[:n], ' '.join(tokens[n:])
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1]
    return make_word(flat_points(tokens), text)


def read_uber_text(annotations: Path, image_root: Path, split: Optional[str] = None) -> Iterator[ImageEntry]:
    """The images of an Uber-Text ground-truth folder and their words (``split`` is unused: one folder per split)."""
    files = per_image_files(annotations, image_root, 'truth_')
    return (ImageEntry(path, name, [parse_line(line) for line in read_lines(gt)]) for gt, path, name in files)
