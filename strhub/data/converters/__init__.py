"""Converters from the public annotations of real scene-text datasets to cropped words and STR LMDBs.

Each dataset module reads its annotations as published and yields :class:`~strhub.data.converters.base.ImageEntry`
records (an image and its words: polygon, label, language and why the annotation says to skip it);
:mod:`~strhub.data.converters.geometry` crops a word to an upright rectangle; :func:`convert_words` writes the crops
and a ``path<TAB>label`` ground-truth file. ``tools/convert_dataset.py`` runs them and builds the LMDB.

Modules: :mod:`~strhub.data.converters.coco_json` (COCO-Text v1.4, TextOCR), :mod:`~strhub.data.converters.rrc_json`
(ArT, LSVT), :mod:`~strhub.data.converters.mlt` (MLT19), :mod:`~strhub.data.converters.uber_text` (Uber-Text).
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional, Tuple

from strhub.data.converters.base import AnnotationError, ImageEntry, Word
from strhub.data.converters.coco_json import read_coco_text, read_textocr
from strhub.data.converters.convert import CROP_FORMATS, ConversionReport, convert_words
from strhub.data.converters.geometry import ROTATIONS, crop_word
from strhub.data.converters.mlt import read_mlt19
from strhub.data.converters.rrc_json import read_rrc_json
from strhub.data.converters.uber_text import read_uber_text


@dataclass(frozen=True)
class DatasetFormat:
    """A dataset's annotation format.

    Attributes:
        title: the dataset's name.
        read: ``read(annotations, image_root, split)`` -> the images and their words.
        annotations: what ANNOTATIONS is for this format (a file name or a folder).
        folder: whether ANNOTATIONS is a folder (else a file).
        splits: the values of the format's split field (``"set"``); empty when a split is a file or folder of its own.
        languages: whether words carry a language or script (``--languages`` can filter them).
    """

    title: str
    read: Callable[[Path, Path, Optional[str]], Iterator[ImageEntry]]
    annotations: str
    folder: bool = False
    splits: Tuple[str, ...] = ()
    languages: bool = False


FORMATS = {
    'cocotext': DatasetFormat('COCO-Text', read_coco_text, 'COCO_Text.json', splits=('train', 'val'), languages=True),
    'textocr': DatasetFormat('TextOCR', read_textocr, 'TextOCR_0.1_train.json or TextOCR_0.1_val.json'),
    'art': DatasetFormat('ArT', read_rrc_json, 'train_labels.json', languages=True),
    'lsvt': DatasetFormat('LSVT', read_rrc_json, 'train_full_labels.json'),
    'mlt19': DatasetFormat('MLT19', read_mlt19, 'the folder of gt .txt files', folder=True, languages=True),
    'ubertext': DatasetFormat('Uber-Text', read_uber_text, 'the folder of truth .txt files', folder=True),
}

__all__ = [
    'AnnotationError',
    'CROP_FORMATS',
    'ConversionReport',
    'DatasetFormat',
    'FORMATS',
    'ImageEntry',
    'ROTATIONS',
    'Word',
    'convert_words',
    'crop_word',
]
