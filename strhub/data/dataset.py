"""LMDB scene-text datasets (spec §3.1, §3.2)."""

import glob
import io
import logging
import os
import unicodedata
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import lmdb
from PIL import Image, UnidentifiedImageError
from torch.utils.data import ConcatDataset, Dataset

from .lmdb_io import SHARED_ENVS, InvalidLmdbError, image_key, label_key, read_num_samples
from .utils import CharsetAdapter

__all__ = [
    'BAD_RECORD_REASONS',
    'FILTER_REASONS',
    'CorruptRecordError',
    'CorruptRecordWarning',
    'InvalidLmdbError',
    'LmdbDataset',
    'build_tree_dataset',
    'describe_records',
]

log = logging.getLogger(__name__)

# Reasons a record is dropped, the keys of ``LmdbDataset.num_skipped``. The first three are the normal label/image
# filters of the original, 'unsupported_chars' ours for a non-ASCII charset (see LmdbDataset); the others are bad
# records, which the original did not handle (it crashed).
FILTER_REASONS = ('too_long', 'empty_label', 'too_small', 'unsupported_chars')
BAD_RECORD_REASONS = ('missing_label', 'undecodable_label', 'missing_image', 'undecodable_image')
MAX_LISTED = 10  # bad records named in a warning or summary line


class CorruptRecordWarning(UserWarning):
    """Some records of an LMDB were skipped because their label or image is missing or unreadable."""


class CorruptRecordError(RuntimeError):
    """An image checked at construction (``verify_images``) could not be read later: the LMDB changed."""


class _BadImage(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason  # a BAD_RECORD_REASONS key
        self.detail = detail  # what is wrong, for people


def _load_image(buf: Optional[bytes], decode: bool = True) -> Image.Image:
    """A record's image (``buf`` is None when its key is missing): decoded to RGB, or with ``decode=False`` opened
    for its header only (cheap, but blind to truncated pixel data).

    Raises:
        _BadImage: missing, empty or undecodable.
    """
    if buf is None:
        raise _BadImage('missing_image', 'image key missing')
    if not buf:
        raise _BadImage('undecodable_image', 'image is empty (0 bytes)')
    try:
        img = Image.open(io.BytesIO(buf))
        return img.convert('RGB') if decode else img
    except UnidentifiedImageError:  # its message ends with the repr (an address) of the in-memory file
        raise _BadImage('undecodable_image', 'cannot identify image file') from None
    except Exception as e:  # any decoder failure (PIL raises OSError, ValueError, SyntaxError, ...)
        raise _BadImage('undecodable_image', str(e) or type(e).__name__) from None


def describe_records(records: Sequence[Tuple[str, str]]) -> str:
    """``key (reason), ...`` for the first ``MAX_LISTED`` (key, reason) pairs, then how many more."""
    listed = ', '.join(f'{key} ({reason})' for key, reason in records[:MAX_LISTED])
    return listed + (f' and {len(records) - MAX_LISTED} more' if len(records) > MAX_LISTED else '')


class LmdbDataset(Dataset):
    """One STR LMDB: filtered labels in memory, images read lazily.

    Labels are preprocessed once at construction (spec §3.2). With an ASCII charset (every benchmark charset) this is
    the original's: NFKD folded to ASCII (accents dropped, other scripts removed), then case folding and removal of
    the characters outside the charset. A charset with a non-ASCII character is the user's own script, and that
    folding would delete it (the original's users met this as labels silently emptied or shortened), so then labels
    are NFC-normalised instead, case-folded as before, and a label still holding a character outside the charset is
    skipped (``num_skipped['unsupported_chars']``, the characters counted in ``unsupported_chars``) rather than
    trained on with a letter missing. Bad records found then (missing or non-UTF-8 label,
    or, with ``min_image_dim`` or ``verify_images``, a missing or unreadable image) are skipped, counted in
    ``num_skipped``, listed in ``bad_records`` and reported in one ``CorruptRecordWarning`` naming the path, the
    record keys and the reasons.

    For evaluation (``verify_images=True``) every image is decoded at construction, so a bad record is excluded
    before anything is counted or scored: ``len()`` is the number of samples actually evaluated, and ``bad_records``
    says which were left out and why. An image unreadable later (the LMDB changed) raises ``CorruptRecordError``.

    For training (the default) images are only read in ``__getitem__``, and an unreadable one must not stop an
    epoch: a training step needs a full batch, and the substitute is another real sample of the same set, so the
    dataset warns once (per process: each DataLoader worker holds its own copy), counts it, remembers it, and
    returns the next readable sample instead (index + 1, wrapping around), image and label together. This is
    deterministic, so the epoch keeps its length and the substitute depends only on the index. Never evaluate so:
    the substitute would be scored in place of the bad record and counted in the set's size.

    The LMDB environment is opened on first access in each process (never inherited through fork or pickling) with
    the original's flags: read-only, ``lock=False``, ``readahead=False``, ``meminit=False``, ``max_readers=1``; it is
    shared with other datasets on the same directory in that process (see :class:`~strhub.data.lmdb_io.SharedEnvs`).

    Args:
        root: directory holding ``data.mdb``.
        charset: characters kept by the ``CharsetAdapter`` (training or test charset).
        max_label_len: labels longer than this *before* charset adaptation are skipped.
        min_image_dim: skip images whose width or height is smaller (0 disables; reads every image header).
        remove_whitespace: delete all whitespace from labels.
        normalize_unicode: normalise labels: NFKD folded to ASCII for an ASCII charset, NFC otherwise.
        transform: applied to the PIL RGB image.
        verify_images: decode every image at construction and exclude the bad records (evaluation); costs one
            extra decode per image.

    Raises:
        FileNotFoundError: ``root`` or its ``data.mdb`` does not exist.
        InvalidLmdbError: not an LMDB, truncated, or without a valid ``num-samples``.
    """

    def __init__(
        self,
        root: Union[str, os.PathLike],
        charset: str,
        max_label_len: int,
        min_image_dim: int = 0,
        remove_whitespace: bool = True,
        normalize_unicode: bool = True,
        transform: Optional[Callable] = None,
        verify_images: bool = False,
    ) -> None:
        self._env: Optional[lmdb.Environment] = None
        self._env_pid: Optional[int] = None
        self.root = str(root)
        self.transform = transform
        self.verify_images = verify_images
        # The original never stored min_image_dim, so its filter raised AttributeError (spec §10.9); stored here.
        self.min_image_dim = min_image_dim
        self.labels: List[str] = []
        self.filtered_index_list: List[int] = []  # 1-based LMDB index of each kept sample
        self.num_skipped: Dict[str, int] = dict.fromkeys(FILTER_REASONS + BAD_RECORD_REASONS, 0)
        # (key, reason) of each bad record: those skipped at construction, then those met in __getitem__ (this process)
        self.bad_records: List[Tuple[str, str]] = []
        # How often each character outside a non-ASCII charset made a label be skipped
        self.unsupported_chars: Counter = Counter()
        self._bad_items: set = set()  # dataset indices found unreadable in __getitem__ (this process)
        self._warned_bad_item = False
        self.num_samples = self._preprocess_labels(charset, remove_whitespace, normalize_unicode, max_label_len)

    def _preprocess_labels(
        self, charset: str, remove_whitespace: bool, normalize_unicode: bool, max_label_len: int
    ) -> int:
        charset_adapter = CharsetAdapter(charset)
        own_script = not charset.isascii()
        env = SHARED_ENVS.acquire(self.root)
        try:
            with env.begin() as txn:
                num_samples = read_num_samples(txn, self.root)
                for index in range(1, num_samples + 1):  # LMDB indices are 1-based
                    raw = txn.get(label_key(index))
                    if raw is None:
                        self._add_bad(label_key(index), 'missing_label', 'label key missing')
                        continue
                    try:
                        label = raw.decode('utf-8')
                    except UnicodeDecodeError:
                        self._add_bad(label_key(index), 'undecodable_label', 'label is not valid UTF-8')
                        continue
                    if remove_whitespace:
                        label = ''.join(label.split())
                    if normalize_unicode and own_script:  # composed characters, as a charset lists them
                        label = unicodedata.normalize('NFC', label)
                    elif normalize_unicode:  # compatible ASCII: accents dropped, other non-ASCII removed
                        label = unicodedata.normalize('NFKD', label).encode('ascii', 'ignore').decode()
                    # Length before charset filtering: a too-long original label is skipped even if filtering would
                    # shorten it.
                    if len(label) > max_label_len:
                        self.num_skipped['too_long'] += 1
                        continue
                    if own_script:
                        label = charset_adapter.fold_case(label)
                        missing = charset_adapter.unsupported.findall(label)
                        if missing:
                            self.num_skipped['unsupported_chars'] += 1
                            self.unsupported_chars.update(missing)
                            continue
                    else:
                        label = charset_adapter(label)
                    if not label:
                        self.num_skipped['empty_label'] += 1
                        continue
                    if self.min_image_dim > 0 or self.verify_images:
                        try:
                            w, h = _load_image(txn.get(image_key(index)), decode=self.verify_images).size
                        except _BadImage as e:
                            self._add_bad(image_key(index), e.reason, e.detail)
                            continue
                        if w < self.min_image_dim or h < self.min_image_dim:
                            self.num_skipped['too_small'] += 1
                            continue
                    self.labels.append(label)
                    self.filtered_index_list.append(index)
        finally:
            SHARED_ENVS.release(self.root)
        if self.bad_records:
            warnings.warn(
                f'LMDB {self.root}: skipped {len(self.bad_records)} bad record(s) of {num_samples}: '
                f'{describe_records(self.bad_records)}',
                CorruptRecordWarning,
                stacklevel=3,
            )
        return len(self.labels)

    def skip_summary(self) -> str:
        """``' (skipped: 3 too_long, 2 unsupported_chars: 'ж' 2)'``, or '' when nothing was skipped."""
        counts = [f'{n} {reason}' for reason, n in self.num_skipped.items() if n]
        if not counts:
            return ''
        if self.unsupported_chars:
            chars = ', '.join(f'{c!r} {n}' for c, n in self.unsupported_chars.most_common(MAX_LISTED))
            more = len(self.unsupported_chars) - MAX_LISTED
            counts.append(f'characters outside the charset: {chars}' + (f' and {more} more' if more > 0 else ''))
        return f' (skipped: {", ".join(counts)})'

    def _add_bad(self, key: bytes, reason: str, detail: str) -> None:
        self.num_skipped[reason] += 1
        self.bad_records.append((key.decode(), detail))

    @property
    def env(self) -> lmdb.Environment:
        # Re-acquired after a fork: an LMDB handle must not be used across processes.
        if self._env is None or self._env_pid != os.getpid():
            self._env = SHARED_ENVS.acquire(self.root)
            self._env_pid = os.getpid()
        return self._env

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state['_env'] = state['_env_pid'] = None  # LMDB handles cannot be pickled; each worker opens its own
        return state

    def __del__(self) -> None:
        if getattr(self, '_env', None) is not None and self._env_pid == os.getpid():
            self._env = None
            try:
                SHARED_ENVS.release(self.root)
            except Exception:  # interpreter shutdown
                pass

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> Tuple[Any, str]:
        """Returns ``(transform(image), label)``."""
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f'index {index} out of range for a dataset of {n} samples')
        for offset in range(n):
            i = (index + offset) % n
            if i in self._bad_items:
                continue
            sample = self._read(i)
            if sample is not None:
                img, label = sample
                return (self.transform(img) if self.transform is not None else img), label
        raise RuntimeError(f'LMDB {self.root}: no readable image in any of its {n} samples')

    def _read(self, index: int) -> Optional[Tuple[Image.Image, str]]:
        key = image_key(self.filtered_index_list[index])
        with self.env.begin() as txn:
            buf = txn.get(key)
        try:
            return _load_image(buf), self.labels[index]
        except _BadImage as e:
            if self.verify_images:  # never substitute a sample that will be scored
                raise CorruptRecordError(
                    f'LMDB {self.root}: {key.decode()} ({e.detail}) was readable when the dataset was built; '
                    'the LMDB changed during the run'
                ) from None
            self._add_bad(key, e.reason, e.detail)
            self._bad_items.add(index)
            if not self._warned_bad_item:
                self._warned_bad_item = True
                warnings.warn(
                    f'LMDB {self.root}: {key.decode()} ({e.detail}) at dataset index {index}; returning the next '
                    'readable sample instead (further bad images are counted silently)',
                    CorruptRecordWarning,
                    stacklevel=3,
                )
        return None


def build_tree_dataset(root: Union[str, os.PathLike], *args, **kwargs) -> ConcatDataset:
    """Concatenates one ``LmdbDataset`` per directory holding a ``data.mdb`` anywhere under ``root``.

    Args:
        root: directory searched recursively (hidden directories excluded, as glob does).
        *args, **kwargs: ``LmdbDataset`` arguments after ``root``.

    Raises:
        FileNotFoundError: ``root`` is missing or contains no ``data.mdb``.
    """
    root = Path(root).absolute()
    if not root.is_dir():
        raise FileNotFoundError(f'dataset root directory not found: {root}')
    log.info(f'dataset root:\t{root}')
    # Sorted, unlike the original (raw glob order, which depends on the file system), so that the concatenation
    # order, and with it the shuffled order for a seed, is the same on every machine. root_dir= avoids glob
    # interpreting characters such as '[' in the root path.
    mdbs = sorted(glob.glob(os.path.join('**', 'data.mdb'), root_dir=root, recursive=True))
    if not mdbs:
        raise FileNotFoundError(f'no LMDB (data.mdb) found under {root}')
    datasets = []
    for mdb in mdbs:
        ds_name = os.path.dirname(mdb) or '.'
        dataset = LmdbDataset(root / ds_name, *args, **kwargs)
        log.info(f'\tlmdb:\t{ds_name}\tnum samples: {len(dataset)}{dataset.skip_summary()}')
        datasets.append(dataset)
    return ConcatDataset(datasets)
