"""Writing a dataset's words as crop files and a ground-truth file of ``path<TAB>label`` lines (PARSeq's format)."""

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Collection, Iterable, List, Optional, Tuple, Union

from PIL import Image

from strhub.data.converters.base import MISSING_IMAGE, OTHER_LANGUAGE, UNREADABLE_IMAGE, ImageEntry, Word
from strhub.data.converters.geometry import crop_word, rotate_vertical

# Pillow format and save options per crop file extension: JPEG keeps files small (PARSeq's converters write JPEG
# crops too), PNG keeps the source pixels exactly.
CROP_FORMATS = {'jpg': ('JPEG', {'quality': 95}), 'png': ('PNG', {})}
GT_FILE = 'gt.txt'
IMAGES_DIR = 'images'


@dataclass
class ConversionReport:
    """What :func:`convert_words` did: words kept and skipped by reason, images read and skipped by reason."""

    dataset: str
    out_dir: str
    kept: int = 0
    images: int = 0
    rotated: int = 0
    skipped_words: Counter = field(default_factory=Counter)  # reason -> words
    skipped_images: Counter = field(default_factory=Counter)  # reason -> images
    words_in_skipped_images: Counter = field(default_factory=Counter)  # reason -> words those images held
    examples: List[Tuple[str, str]] = field(default_factory=list)  # (image, reason and detail): the first ones

    def table(self) -> str:
        """The counts as a table: one row per outcome, words and images."""
        rows = [('kept', str(self.kept), str(self.images))]
        rows += [(f'skipped: {r}', str(n), '') for r, n in sorted(self.skipped_words.items())]
        rows += [
            (f'skipped: {r}', str(self.words_in_skipped_images[r]), str(n))
            for r, n in sorted(self.skipped_images.items())
        ]
        width = max(len(r[0]) for r in rows)
        lines = [f'{"":{width}}  {"words":>7}  {"images":>7}']
        lines += [f'{r:{width}}  {w:>7}  {i:>7}' for r, w, i in rows]
        return '\n'.join(lines)

    def __str__(self) -> str:
        out = [
            f'{self.dataset}: {self.kept} words kept from {self.images} images, cropped into '
            f'{Path(self.out_dir) / IMAGES_DIR} and listed in {Path(self.out_dir) / GT_FILE}'
            + (f' ({self.rotated} vertical crops rotated)' if self.rotated else ''),
            self.table(),
        ]
        if self.examples:
            out.append('Skipped images (first ones):')
            out += [f'  {image}: {why}' for image, why in self.examples]
        return '\n'.join(out)


def _wanted(word: Word, languages: Optional[Collection[str]]) -> Optional[str]:
    """Why ``word`` is skipped before its image is opened, or None."""
    if word.skip:
        return word.skip
    if languages is not None and (word.language or '').casefold() not in languages:
        return OTHER_LANGUAGE
    return None


def _open_rgb(path: Path) -> Union[Image.Image, str]:
    try:
        with Image.open(path) as img:
            return img.convert('RGB')  # decodes everything: truncated files fail here, not at the first crop
    except Exception as e:  # Pillow raises many types (OSError, SyntaxError, ValueError, ...) for bad files
        return f'{type(e).__name__}: {e}'


def convert_words(
    entries: Iterable[ImageEntry],
    out_dir: Union[str, Path],
    dataset: str = '',
    rotation: str = 'none',
    vertical_ratio: float = 1.5,
    crop_format: str = 'jpg',
    languages: Optional[Collection[str]] = None,
    max_examples: int = 10,
    progress: bool = False,
) -> ConversionReport:
    """Crops every word of ``entries`` into ``out_dir/images/<image name>_<word index>.<crop_format>`` and lists the
    crops in ``out_dir/gt.txt`` as ``images/...<TAB>label`` lines (paths relative to ``out_dir``).

    Labels keep their characters; runs of whitespace (tabs and line breaks included, which the ground-truth format
    cannot hold) become one space, and leading and trailing whitespace is removed. An image whose words are all
    skipped by their annotation is not opened. Coordinates refer to the image as stored: EXIF orientation is not
    applied (as PARSeq's converters read images).

    Args:
        entries: the images and words of a dataset (a reader of :data:`strhub.data.converters.FORMATS`).
        out_dir: the output folder (created); existing crops of the same name are overwritten.
        dataset: the dataset's name in the report.
        rotation: 'none', 'cw' or 'ccw': how crops more than ``vertical_ratio`` times taller than wide are turned
            (:func:`~strhub.data.converters.geometry.rotate_vertical`).
        vertical_ratio: the height / width above which a crop counts as vertical.
        crop_format: 'jpg' or 'png'.
        languages: keep only words whose language or script is one of these (casefolded); None keeps all.
        max_examples: how many skipped images the report names.
        progress: show a tqdm progress bar.

    Returns:
        The report.
    """
    from tqdm import tqdm

    if crop_format not in CROP_FORMATS:
        raise ValueError(f'crop_format must be one of {sorted(CROP_FORMATS)}, got {crop_format!r}')
    pil_format, save_options = CROP_FORMATS[crop_format]
    languages = None if languages is None else {lang.casefold() for lang in languages}
    out_dir = Path(out_dir)
    (out_dir / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    report = ConversionReport(dataset, str(out_dir))
    with open(out_dir / GT_FILE, 'w', encoding='utf-8', newline='\n') as gt:
        for entry in tqdm(entries, disable=not progress, unit='image'):
            todo = []
            for k, word in enumerate(entry.words):
                reason = _wanted(word, languages)
                if reason:
                    report.skipped_words[reason] += 1
                else:
                    todo.append((k, word))
            if not todo:
                continue
            image = _open_rgb(entry.path) if entry.path else None
            if not isinstance(image, Image.Image):
                reason = UNREADABLE_IMAGE if entry.path else MISSING_IMAGE
                report.skipped_images[reason] += 1
                report.words_in_skipped_images[reason] += len(todo)
                if len(report.examples) < max_examples:
                    report.examples.append((str(entry.path or entry.name), f'{reason} ({image})' if image else reason))
                continue
            report.images += 1
            for k, word in todo:
                crop = crop_word(image, word.points)
                if isinstance(crop, str):
                    report.skipped_words[crop] += 1
                    continue
                crop, turned = rotate_vertical(crop, rotation, vertical_ratio)
                report.rotated += turned
                rel = f'{IMAGES_DIR}/{entry.name}_{k}.{crop_format}'
                (out_dir / rel).parent.mkdir(parents=True, exist_ok=True)
                crop.save(out_dir / rel, pil_format, **save_options)
                gt.write(f'{rel}\t{" ".join(word.label.split())}\n')
                report.kept += 1
    return report
