"""ArT (ICDAR 2019 RRC-ArT) and LSVT (ICDAR 2019 RRC-LSVT): one JSON object keyed by image name.

Both publish ``{"gt_0": [{"transcription": str, "points": [[x1, y1], [x2, y2], ...], "illegibility": bool, ...},
...], "gt_1": [...], ...}``: the key is the image's file stem (``gt_0.jpg``), looked up anywhere under IMAGE_ROOT.

**ArT** (``train_labels.json``; images ``train_images/gt_N.jpg``; https://rrc.cvc.uab.es/?ch=14). Words also carry
``"language"`` (``Latin``, ``Chinese``, ``Mixed``, ``None``: ``--languages``). Polygons have 4 points or more
(curved text: cropped as their minimum-area rectangle, see :mod:`~strhub.data.converters.geometry`).

**LSVT** (``train_full_labels.json``, the fully annotated part; images ``train_full_images_0/gt_N.jpg`` and
``train_full_images_1/gt_N.jpg``; https://rrc.cvc.uab.es/?ch=16). No language field. The weakly annotated part
(``train_weak_labels.json``, transcriptions without positions) has no geometry to crop and is not supported.

Words with ``"illegibility": true`` or the transcription ``###`` are skipped. Not confirmed: the vertex order of
either dataset's polygons (taken as given; counter-clockwise ones are reordered, see ``order_clockwise``).
"""

from pathlib import Path
from typing import Iterator, Optional

from strhub.data.converters.base import AnnotationError, ImageEntry, ImageIndex, Word, load_json, make_word, pair_points


def _word(item) -> Word:
    if not isinstance(item, dict):
        return make_word(None, '')
    return make_word(
        pair_points(item.get('points')), item.get('transcription'), bool(item.get('illegibility')), item.get('language')
    )


def read_rrc_json(annotations: Path, image_root: Path, split: Optional[str] = None) -> Iterator[ImageEntry]:
    """The images of an ArT or LSVT label file and their words (``split`` is unused: one file per split).

    Raises:
        AnnotationError: the file is not such a JSON object (raised by the call, before any image is read).
    """
    data = load_json(annotations)
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise AnnotationError(f'{annotations}: expected a JSON object of image name -> list of words')
    index = ImageIndex(image_root)
    return (ImageEntry(*index.find(stem), [_word(item) for item in items]) for stem, items in data.items() if items)
