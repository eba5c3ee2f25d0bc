"""Writing the public STR LMDB format: ``num-samples``, ``image-%09d``, ``label-%09d`` (1-based)."""

from pathlib import Path
from typing import Iterable, Tuple, Union

import lmdb

MAP_SIZE = 1 << 40  # 1 TiB of address space, as the original; the file only grows as needed
COMMIT_EVERY = 1000


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
