"""MLT19 (ICDAR 2019 RRC-MLT, https://rrc.cvc.uab.es/?ch=15): one ground-truth text file per image.

Each line of an image's UTF-8 file is ``x1,y1,x2,y2,x3,y3,x4,y4,script,transcription``: the 4 corners clockwise,
the script (``Latin``, ``Arabic``, ``Chinese``, ``Japanese``, ``Korean``, ``Bangla``, ``Hindi``, ``Symbols``,
``Mixed``, ``None``: ``--languages``) and everything after the ninth comma as the transcription (commas included,
no escapes); ``###`` marks a don't-care word, skipped.

ANNOTATIONS is the folder of these files (e.g. ``train_gt_t13``) and IMAGE_ROOT the folder of the images (e.g. the
one holding ``ImagesPart1`` and ``ImagesPart2``; images are found by name in any sub-folder, whatever their
extension: JPEG, PNG or GIF). A file ``tr_img_00001.txt`` belongs to the image ``tr_img_00001.*`` and, as in MLT17's
naming, ``gt_img_1.txt`` to ``img_1.*``. Not confirmed: the naming of MLT19's training files, known here from
MindOCR's MLT19 converter (no ``gt_`` prefix); both namings are accepted.
"""

from pathlib import Path
from typing import Iterator, Optional

from strhub.data.converters.base import ImageEntry, Word, flat_points, make_word, per_image_files, read_lines


def parse_line(line: str) -> Word:
    """One line of an MLT ground-truth file as a :class:`Word` (malformed when it has fewer than 10 fields)."""
    parts = line.split(',', 9)
    if len(parts) < 10:
        return make_word(None, '')
    return make_word(flat_points(parts[:8]), parts[9], language=parts[8].strip())


def read_mlt19(annotations: Path, image_root: Path, split: Optional[str] = None) -> Iterator[ImageEntry]:
    """The images of an MLT19 ground-truth folder and their words (``split`` is unused: one folder per split)."""
    files = per_image_files(annotations, image_root, 'gt_')
    return (ImageEntry(path, name, [parse_line(line) for line in read_lines(gt)]) for gt, path, name in files)
