"""LMDB scene-text datasets (spec §3.1, §3.2)."""

import glob
import io
import logging
import os
import threading
import unicodedata
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import lmdb
from PIL import Image, UnidentifiedImageError
from torch.utils.data import ConcatDataset, Dataset

from .lmdb_io import image_key, label_key
from .utils import CharsetAdapter

log = logging.getLogger(__name__)

# Reasons a record is dropped, the keys of ``LmdbDataset.num_skipped``. The first three are the normal label/image
# filters of the original; the others are bad records, which the original did not handle (it crashed).
FILTER_REASONS = ('too_long', 'empty_label', 'too_small')
BAD_RECORD_REASONS = ('missing_label', 'undecodable_label', 'missing_image', 'undecodable_image')
MAX_LISTED = 10  # bad records named in a warning or summary line


class InvalidLmdbError(ValueError):
    """The directory holds no readable STR LMDB (not an LMDB, truncated, no valid ``num-samples``)."""


class CorruptRecordWarning(UserWarning):
    """Some records of an LMDB were skipped because their label or image is missing or unreadable."""


class CorruptRecordError(RuntimeError):
    """An image checked at construction (``verify_images``) could not be read later: the LMDB changed."""


class _BadImage(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason  # a BAD_RECORD_REASONS key
        self.detail = detail  # what is wrong, for people


def _open_env(root: str) -> lmdb.Environment:
    """Opens an STR LMDB read-only with the original's flags, turning low-level failures into clear errors."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f'LMDB dataset directory not found: {root}')
    mdb = os.path.join(root, 'data.mdb')
    if not os.path.isfile(mdb):
        raise FileNotFoundError(f'no data.mdb in LMDB dataset directory: {root}')
    try:
        env = lmdb.open(root, max_readers=1, readonly=True, create=False, readahead=False, meminit=False, lock=False)
    except lmdb.Error as e:
        raise InvalidLmdbError(f'cannot open LMDB at {root}: {e}') from e
    # A truncated data.mdb opens fine when its meta pages survive, but reading a page past the end of the file kills
    # the process with SIGBUS. The committed meta page knows the last used page, so compare it with the file size.
    needed = (env.info()['last_pgno'] + 1) * env.stat()['psize']
    size = os.path.getsize(mdb)
    if size < needed:
        env.close()
        raise InvalidLmdbError(f'LMDB at {root} is truncated: data.mdb has {size} bytes, its header needs {needed}')
    return env


class _EnvRegistry:
    """Per-process, reference-counted read-only LMDB environments, shared by all datasets on the same directory.

    Recent py-lmdb (3.0 here) refuses to open an environment that is already open in the process, even through
    another path or in a forked child, which inherits the parent's handles. Sharing handles lets several datasets
    (or pickled copies) read one LMDB; after a fork the inherited handles are closed (this affects the child only)
    and reopened.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._envs: Dict[str, List] = {}  # real path -> [environment, reference count]
        # A lock held by another thread at fork time would stay locked forever in the child.
        os.register_at_fork(after_in_child=self._new_lock)

    def _new_lock(self) -> None:
        self._lock = threading.Lock()

    def _after_fork(self) -> None:
        if self._pid != os.getpid():
            for env, _ in self._envs.values():
                env.close()
            self._envs.clear()
            self._pid = os.getpid()

    def acquire(self, root: str) -> lmdb.Environment:
        with self._lock:
            self._after_fork()
            key = os.path.realpath(root)
            entry = self._envs.get(key)
            if entry is None:
                entry = self._envs[key] = [_open_env(root), 0]
            entry[1] += 1
            return entry[0]

    def release(self, root: str) -> None:
        with self._lock:
            if self._pid != os.getpid():
                return  # a handle from before a fork: dropped at the next acquire
            key = os.path.realpath(root)
            entry = self._envs.get(key)
            if entry is not None:
                entry[1] -= 1
                if entry[1] <= 0:
                    entry[0].close()
                    del self._envs[key]


_ENVS = _EnvRegistry()


def _read_num_samples(txn: lmdb.Transaction, root: str) -> int:
    raw = txn.get(b'num-samples')
    if raw is None:
        raise InvalidLmdbError(f'LMDB at {root} has no "num-samples" key (not an STR dataset, or an incomplete write)')
    try:
        num_samples = int(raw.decode('ascii'))
    except (UnicodeDecodeError, ValueError):
        raise InvalidLmdbError(f'LMDB at {root} has an invalid "num-samples" value: {raw[:32]!r}') from None
    if num_samples < 0:
        raise InvalidLmdbError(f'LMDB at {root} has a negative "num-samples": {num_samples}')
    return num_samples


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

    Labels are preprocessed once at construction (spec §3.2). Bad records found then (missing or non-UTF-8 label,
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
    shared with other datasets on the same directory in that process (see ``_EnvRegistry``).

    Args:
        root: directory holding ``data.mdb``.
        charset: characters kept by the ``CharsetAdapter`` (training or test charset).
        max_label_len: labels longer than this *before* charset adaptation are skipped.
        min_image_dim: skip images whose width or height is smaller (0 disables; reads every image header).
        remove_whitespace: delete all whitespace from labels.
        normalize_unicode: NFKD-normalise labels and drop non-ASCII characters.
        unlabelled: no label filtering; ``__getitem__`` returns the dataset index as the label.
        transform: applied to the PIL RGB image.
        verify_images: decode every image at construction and exclude the bad records (evaluation); costs one
            extra decode per image.

    Raises:
        FileNotFoundError: ``root`` or its ``data.mdb`` does not exist.
        InvalidLmdbError: not an LMDB, truncated, or without a valid ``num-samples``.
        ValueError: ``verify_images`` with ``unlabelled``.
    """

    def __init__(
        self,
        root: Union[str, os.PathLike],
        charset: str,
        max_label_len: int,
        min_image_dim: int = 0,
        remove_whitespace: bool = True,
        normalize_unicode: bool = True,
        unlabelled: bool = False,
        transform: Optional[Callable] = None,
        verify_images: bool = False,
    ) -> None:
        if verify_images and unlabelled:
            raise ValueError('verify_images needs labelled data: unlabelled datasets are not filtered')
        self._env: Optional[lmdb.Environment] = None
        self._env_pid: Optional[int] = None
        self.root = str(root)
        self.unlabelled = unlabelled
        self.transform = transform
        self.verify_images = verify_images
        # The original never stored min_image_dim, so its filter raised AttributeError (spec §10.9); stored here.
        self.min_image_dim = min_image_dim
        self.labels: List[str] = []
        self.filtered_index_list: List[int] = []  # 1-based LMDB index of each kept sample
        self.num_skipped: Dict[str, int] = dict.fromkeys(FILTER_REASONS + BAD_RECORD_REASONS, 0)
        # (key, reason) of each bad record: those skipped at construction, then those met in __getitem__ (this process)
        self.bad_records: List[Tuple[str, str]] = []
        self._bad_items: set = set()  # dataset indices found unreadable in __getitem__ (this process)
        self._warned_bad_item = False
        self.num_samples = self._preprocess_labels(charset, remove_whitespace, normalize_unicode, max_label_len)

    def _preprocess_labels(
        self, charset: str, remove_whitespace: bool, normalize_unicode: bool, max_label_len: int
    ) -> int:
        charset_adapter = CharsetAdapter(charset)
        env = _ENVS.acquire(self.root)
        try:
            with env.begin() as txn:
                num_samples = _read_num_samples(txn, self.root)
                if self.unlabelled:  # as the original: no filtering at all, min_image_dim included
                    return num_samples
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
                    if normalize_unicode:  # compatible ASCII: accents dropped, other non-ASCII removed
                        label = unicodedata.normalize('NFKD', label).encode('ascii', 'ignore').decode()
                    # Length before charset filtering: a too-long original label is skipped even if filtering would
                    # shorten it.
                    if len(label) > max_label_len:
                        self.num_skipped['too_long'] += 1
                        continue
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
            _ENVS.release(self.root)
        if self.bad_records:
            warnings.warn(
                f'LMDB {self.root}: skipped {len(self.bad_records)} bad record(s) of {num_samples}: '
                f'{describe_records(self.bad_records)}',
                CorruptRecordWarning,
                stacklevel=3,
            )
        return len(self.labels)

    def _add_bad(self, key: bytes, reason: str, detail: str) -> None:
        self.num_skipped[reason] += 1
        self.bad_records.append((key.decode(), detail))

    @property
    def env(self) -> lmdb.Environment:
        # Re-acquired after a fork: an LMDB handle must not be used across processes.
        if self._env is None or self._env_pid != os.getpid():
            self._env = _ENVS.acquire(self.root)
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
                _ENVS.release(self.root)
            except Exception:  # interpreter shutdown
                pass

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> Tuple[Any, Union[str, int]]:
        """Returns ``(transform(image), label)``; the label is the dataset index when ``unlabelled``."""
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

    def _read(self, index: int) -> Optional[Tuple[Image.Image, Union[str, int]]]:
        if self.unlabelled:
            # The original read image-<index> with the 0-based index (off by one, image-000000000 does not exist).
            lmdb_index, label = index + 1, index
        else:
            lmdb_index, label = self.filtered_index_list[index], self.labels[index]
        key = image_key(lmdb_index)
        with self.env.begin() as txn:
            buf = txn.get(key)
        try:
            return _load_image(buf), label
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
        log.info(f'\tlmdb:\t{ds_name}\tnum samples: {len(dataset)}')
        datasets.append(dataset)
    return ConcatDataset(datasets)
