"""COCO-Text v1.4 and TextOCR: one JSON file in the COCO-Text layout.

Both files hold ``{"imgs": {id: {"file_name", "set", "width", "height", ...}}, "anns": {id: {"image_id", "bbox":
[x, y, width, height], "utf8_string", ...}}, "imgToAnns": {image id: [annotation ids]}}`` (ids as JSON keys are
strings; COCO-Text's ``imgToAnns`` lists them as numbers). An image's file is ``IMAGE_ROOT/file_name``, or
``IMAGE_ROOT/<base name of file_name>`` when that does not exist (TextOCR's names are ``train/<id>.jpg`` while its
archive unpacks to ``train_images/<id>.jpg``). Images without annotations are not opened.

**COCO-Text v1.4** (``COCO_Text.json``, https://vision.cornell.edu/se3/coco-text-2/; images: MS-COCO train2014).
An annotation has ``"legibility": "legible" | "illegible"``, ``"language": "english" | "not english" | "na"``,
``"class": "machine printed" | "handwritten" | "others"`` and, for legible words, ``"utf8_string"``. Illegible
words and words without ``utf8_string`` are skipped. The geometry is ``"polygon"`` ([tl x, tl y, tr x, tr y, br x,
br y, bl x, bl y], as the official API's ``showAnns`` reads it), else ``"mask"`` (the flat polygon of COCO-Text
v2.0, whose JSON is otherwise the same, so ``cocotext.v2.json`` converts too), else ``"bbox"``. Not confirmed: an
example of a v1.4 annotation carrying ``"polygon"``, which is known here from the API code only; annotations without
it fall back to ``"bbox"``. Labels are HTML-unescaped, as PARSeq's COCO-Text v2.0 converter does. ``"set"`` is
``train``, ``val`` or ``test`` (``--split``).

**TextOCR v0.1** (``TextOCR_0.1_train.json``, ``TextOCR_0.1_val.json``, https://textvqa.org/textocr/; images: a
subset of OpenImages). An annotation's ``"points"`` is the flat polygon ``[x1, y1, x2, y2, ...]``, clockwise from
the top-left corner of the text, usually 4 points, more for curved text (``"bbox"`` is used when it is malformed);
``"utf8_string": "."`` marks an illegible or non-English word. Pixel coordinates refer to the image file as stored
(no EXIF rotation is applied, as PARSeq's and MMOCR's converters do); not confirmed for the few OpenImages files with
a rotation field.
"""

import html
from pathlib import Path
from typing import Callable, Iterator, Optional

from strhub.data.converters.base import (
    AnnotationError,
    ImageEntry,
    Word,
    bbox_points,
    flat_points,
    load_json,
    make_word,
    relative_name,
)


def _coco_text_word(ann: dict) -> Word:
    points = flat_points(ann.get('polygon')) if ann.get('polygon') else None
    if points is None and ann.get('mask'):
        points = flat_points(ann['mask'])
    if points is None:
        points = bbox_points(ann.get('bbox'))
    illegible = ann.get('legibility') == 'illegible' or 'utf8_string' not in ann
    label = html.unescape(ann.get('utf8_string') or '')
    return make_word(points, label, illegible, ann.get('language'))


def _textocr_word(ann: dict) -> Word:
    points = flat_points(ann.get('points'))
    if points is None:
        points = bbox_points(ann.get('bbox'))
    label = ann.get('utf8_string')
    return make_word(points, label, label == '.')


def _image_path(image_root: Path, file_name: str) -> Optional[Path]:
    for path in (image_root / file_name, image_root / Path(file_name).name):
        if path.is_file():
            return path
    return None


def _read(
    annotations: Path, image_root: Path, split: Optional[str], to_word: Callable[[dict], Word]
) -> Iterator[ImageEntry]:
    data = load_json(annotations)  # here, not in the generator: a bad file fails before any output is written
    try:
        imgs, anns, img_to_anns = data['imgs'], data['anns'], data['imgToAnns']
    except (KeyError, TypeError):
        raise AnnotationError(f'{annotations}: expected a JSON object with "imgs", "anns" and "imgToAnns"') from None

    def entries() -> Iterator[ImageEntry]:
        for img_id, img in imgs.items():
            if split is not None and img.get('set') != split:
                continue
            ann_ids = img_to_anns.get(str(img_id)) or []
            words = [to_word(anns[str(a)]) if str(a) in anns else make_word(None, '') for a in ann_ids]
            if not words:
                continue
            file_name = img.get('file_name')
            if not isinstance(file_name, str):
                raise AnnotationError(f'{annotations}: image {img_id} has no "file_name"')
            path = _image_path(image_root, file_name)
            yield ImageEntry(path, relative_name(path, image_root) if path else file_name, words)

    return entries()


def read_coco_text(annotations: Path, image_root: Path, split: Optional[str] = None) -> Iterator[ImageEntry]:
    """The images of ``COCO_Text.json`` (of ``split``: train or val; all when None) and their words."""
    return _read(annotations, image_root, split, _coco_text_word)


def read_textocr(annotations: Path, image_root: Path, split: Optional[str] = None) -> Iterator[ImageEntry]:
    """The images of a TextOCR JSON file (of ``split``: train or val; all when None) and their words."""
    return _read(annotations, image_root, split, _textocr_word)
