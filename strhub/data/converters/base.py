"""What the dataset readers share: the word and image records they yield, skip reasons, and parsing helpers."""

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

# Skip reasons, as counted in the conversion report. A word is skipped for one reason: the first that applies.
MALFORMED = 'malformed annotation'
ILLEGIBLE = 'illegible'
EMPTY_LABEL = 'empty label'
OTHER_LANGUAGE = 'other language'
OUTSIDE = 'outside image'
DEGENERATE = 'degenerate box'
MISSING_IMAGE = 'missing image'
UNREADABLE_IMAGE = 'unreadable image'

# Image files looked up by name (compared case-insensitively); GIF is one of MLT19's formats.
IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.gif', '.bmp', '.tif', '.tiff', '.webp')


class AnnotationError(ValueError):
    """An annotation file that cannot be read as its format says (one-line message naming the file)."""


@dataclass(frozen=True)
class Word:
    """One annotated text region.

    Attributes:
        points: ``(N, 2)`` float polygon in image pixels (edges of pixels: ``(0, 0)`` is the top-left corner of the
            image), as the annotation orders them; None when the annotation has no usable geometry.
        label: the transcription as published.
        language: the script or language field, where the format has one.
        skip: why the annotation itself says to skip the word (:data:`ILLEGIBLE`, :data:`MALFORMED`, ...), or None.
    """

    points: Optional[np.ndarray]
    label: str
    language: Optional[str] = None
    skip: Optional[str] = None


@dataclass(frozen=True)
class ImageEntry:
    """A source image and its words.

    Attributes:
        path: the image file, or None when it could not be found.
        name: the image's path relative to the image root without its extension ('/'-separated), which names its
            crops (``<name>_<word index>``); when the image is missing, what was looked for, named in the report.
        words: the words in annotation order (their index names the crop, so names are stable across runs).
    """

    path: Optional[Path]
    name: str
    words: List[Word]


def make_word(
    points: Optional[np.ndarray], label: Optional[str], illegible: bool = False, language: Optional[str] = None
) -> Word:
    """A :class:`Word` with its annotation-level skip reason: no geometry, an illegible flag or the '###' marker
    (every format here uses it for don't-care words), or an empty label (a missing or non-string one included)."""
    label = label if isinstance(label, str) else ''
    if points is None:
        skip = MALFORMED
    elif illegible or label.strip() == '###':
        skip = ILLEGIBLE
    elif not label.strip():
        skip = EMPTY_LABEL
    else:
        skip = None
    return Word(points, label, language, skip)


def flat_points(values) -> Optional[np.ndarray]:
    """``[x1, y1, x2, y2, ...]`` (at least 3 points) as an ``(N, 2)`` array; None if not numbers or too few."""
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if arr.ndim != 1 or arr.size < 6 or arr.size % 2 or not np.isfinite(arr).all():
        return None
    return arr.reshape(-1, 2)


def pair_points(values) -> Optional[np.ndarray]:
    """``[[x1, y1], [x2, y2], ...]`` (at least 3 points) as an ``(N, 2)`` array; None if malformed."""
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if arr.ndim != 2 or arr.shape[1] != 2 or len(arr) < 3 or not np.isfinite(arr).all():
        return None
    return arr


def bbox_points(bbox) -> Optional[np.ndarray]:
    """COCO ``[x, y, width, height]`` as its 4 corners, clockwise from the top-left; None if malformed."""
    try:
        x, y, w, h = (float(v) for v in bbox)
    except (TypeError, ValueError):
        return None
    return flat_points([x, y, x + w, y, x + w, y + h, x, y + h])


def load_json(path: Path):
    """The parsed JSON file; AnnotationError if it cannot be read or parsed."""
    try:
        with open(path, encoding='utf-8-sig') as f:
            return json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise AnnotationError(f'cannot read {path} as JSON: {e}') from None


def relative_name(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` without its extension, '/'-separated (the file name if outside ``root``)."""
    try:
        rel = path.relative_to(root)
    except ValueError:
        rel = Path(path.name)
    return rel.with_suffix('').as_posix()


class ImageIndex:
    """The image files under a folder (recursively), found by file stem, e.g. ArT's ``gt_12`` or MLT19's
    ``tr_img_00001`` whatever their extension and sub-folder (LSVT's images come in two folders)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._by_stem: Dict[str, List[Path]] = {}
        seen = {os.path.realpath(root)}
        for folder, dirs, names in os.walk(root, followlinks=True):  # image folders are often links
            real = [os.path.realpath(Path(folder, d)) for d in dirs]
            dirs[:] = [d for d, r in zip(dirs, real) if r not in seen]  # a link loop would never end
            seen.update(real)
            for n in names:
                p = Path(folder, n)
                if p.suffix.lower() in IMAGE_SUFFIXES:
                    self._by_stem.setdefault(p.stem, []).append(p)

    def find(self, stem: str, folder: str = '') -> Tuple[Optional[Path], str]:
        """The image named ``stem`` (preferring one in ``folder``, relative to the root) and its :class:`ImageEntry`
        name; ``(None, 'folder/stem.*')`` if there is none."""
        found: Sequence[Path] = sorted(self._by_stem.get(stem, []))
        preferred = [p for p in found if p.parent == self.root / folder]
        path = (preferred or found or [None])[0]
        if path is None:
            return None, (Path(folder) / f'{stem}.*').as_posix()
        return path, relative_name(path, self.root)


def per_image_files(annotations: Path, image_root: Path, prefix: str) -> Iterator[Tuple[Path, Optional[Path], str]]:
    """For each ``.txt`` file under the folder ``annotations`` (sorted): the file, its image under ``image_root`` and
    the image's :class:`ImageEntry` name. The image is the one named like the file without ``prefix`` (``gt_img_1.txt``
    -> ``img_1.*``), preferably in the same sub-folder.

    Raises:
        AnnotationError: ``annotations`` is not a folder (raised by the call, before any file is read).
    """
    if not annotations.is_dir():
        raise AnnotationError(f'{annotations}: expected a folder of per-image .txt files')
    index = ImageIndex(image_root)
    gt_files = sorted(annotations.rglob('*.txt'))  # listed now: gt.txt, written as the files are read, is no input

    def files() -> Iterator[Tuple[Path, Optional[Path], str]]:
        for gt in gt_files:
            stem = gt.stem[len(prefix) :] if gt.stem.startswith(prefix) else gt.stem
            yield (gt, *index.find(stem, gt.parent.relative_to(annotations).as_posix()))

    return files()


def read_lines(path: Path) -> List[str]:
    """The non-blank lines of a UTF-8 text file (a byte-order mark is ignored); AnnotationError if unreadable."""
    try:
        text = path.read_text(encoding='utf-8-sig')
    except (OSError, UnicodeDecodeError) as e:
        raise AnnotationError(f'cannot read {path} as UTF-8 text: {e}') from None
    return [line for line in text.splitlines() if line.strip()]
