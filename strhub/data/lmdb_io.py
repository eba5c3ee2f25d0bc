"""The public STR LMDB format (``num-samples``, ``image-%09d``, ``label-%09d``, 1-based; spec §3.1): writing it
(atomically, with :func:`make_build_root` and :func:`install_lmdb`), and opening it read-only, checked and shared by every dataset of a process."""

import os
import tempfile
import threading
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Tuple, Union

import lmdb

LMDB_FILES = ('data.mdb', 'lock.mdb')
MAP_SIZE = 1 << 40  # 1 TiB of address space, as the original; the file only grows as needed
COMMIT_EVERY = 1000


class InvalidLmdbError(ValueError):
    """The directory holds no readable STR LMDB (not an LMDB, truncated, no valid ``num-samples``)."""


def image_key(index: int) -> bytes:
    return b'image-%09d' % index


def label_key(index: int) -> bytes:
    return b'label-%09d' % index


def write_lmdb(path: Union[str, Path], samples: Iterable[Tuple[bytes, str]]) -> int:
    """Writes (encoded image bytes, label) pairs as an STR LMDB at ``path`` (created if missing).

    Returns:
        The number of samples written.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    env = lmdb.open(str(path), map_size=MAP_SIZE)
    n = 0
    txn = env.begin(write=True)
    try:
        for image_bytes, label in samples:
            n += 1
            txn.put(image_key(n), image_bytes)
            txn.put(label_key(n), label.encode('utf-8'))
            if n % COMMIT_EVERY == 0:
                txn.commit()
                txn = env.begin(write=True)
        txn.put(b'num-samples', str(n).encode())
        txn.commit()
    except BaseException:
        txn.abort()
        raise
    finally:
        env.close()
    return n


def make_build_root(output_dir: Path) -> Path:
    """A new private folder to build in, on the file system of ``output_dir`` (so that moving the result in is a
    rename): inside ``output_dir`` when it exists, else beside it (missing parent folders are created).

    Raises:
        OSError: that folder cannot be created or written (one-line message naming it).
    """
    base = output_dir if output_dir.is_dir() else output_dir.parent
    try:
        base.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f'.{output_dir.name}.tmp-', dir=base))
    except OSError as e:
        reason = 'not a folder' if isinstance(e, FileExistsError) else e.strerror
        raise OSError(f'cannot write the LMDB in {base}: {reason}') from None


def install_lmdb(build_dir: Path, output_dir: Path) -> None:
    """Moves the LMDB built in ``build_dir`` to ``output_dir``. Into an existing folder, each file replaces the old
    one in a single step (readers see the old data.mdb or the new one, never a mix) and other files are kept."""
    if not output_dir.exists():
        build_dir.rename(output_dir)
        return
    for name in LMDB_FILES:
        os.replace(build_dir / name, output_dir / name)


def open_env(root: str) -> lmdb.Environment:
    """Opens an STR LMDB read-only with the original's flags, turning low-level failures into clear errors.

    Raises:
        FileNotFoundError: ``root`` or its ``data.mdb`` does not exist.
        InvalidLmdbError: not an LMDB, or truncated.
    """
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


def read_num_samples(txn: lmdb.Transaction, root: str) -> int:
    """The ``num-samples`` value of the LMDB at ``root``; InvalidLmdbError if missing, not a number or negative."""
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


def count_samples(root: Union[str, Path]) -> int:
    """The ``num-samples`` of the STR LMDB at ``root``: a quick check that it can be read.

    Raises:
        FileNotFoundError, InvalidLmdbError: as :func:`open_env` and :func:`read_num_samples`.
    """
    root = str(root)
    env = SHARED_ENVS.acquire(root)
    try:
        with env.begin() as txn:
            return read_num_samples(txn, root)
    finally:
        SHARED_ENVS.release(root)


def iter_records(
    root: Union[str, Path], indices: Optional[Iterable[int]] = None
) -> Iterator[Tuple[int, Optional[bytes], Optional[bytes]]]:
    """``(index, label, image)`` of records of the STR LMDB at ``root``, as stored (bytes; None for a missing key).

    Args:
        root: the LMDB folder.
        indices: 1-based record indices to read; default every record, 1 to ``num-samples`` in order.

    Raises:
        FileNotFoundError, InvalidLmdbError: as :func:`count_samples` (on the first ``next``).
    """
    root = str(root)
    env = SHARED_ENVS.acquire(root)  # shared: py-lmdb refuses a second handle on an LMDB open in this process
    try:
        with env.begin() as txn:
            for index in range(1, read_num_samples(txn, root) + 1) if indices is None else indices:
                yield index, txn.get(label_key(index)), txn.get(image_key(index))
    finally:
        SHARED_ENVS.release(root)


class SharedEnvs:
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
        """The environment of ``root`` (opened with :func:`open_env` on first use); pair with :meth:`release`."""
        with self._lock:
            self._after_fork()
            key = os.path.realpath(root)
            entry = self._envs.get(key)
            if entry is None:
                entry = self._envs[key] = [open_env(root), 0]
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


SHARED_ENVS = SharedEnvs()
