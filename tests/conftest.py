"""Shared pytest fixtures."""

import io
import os
import sys
from pathlib import Path
from typing import Callable, Iterable, Tuple, Union

import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from strhub.data.lmdb_io import write_lmdb

# One intra-op thread (also in the tools the tests start): on a 2-core machine shared with DataLoader workers
# and subprocesses, more threads oversubscribe the cores and make the tiny models many times slower.
os.environ.setdefault('OMP_NUM_THREADS', '1')
torch.set_num_threads(int(os.environ['OMP_NUM_THREADS']))

REPO = Path(__file__).resolve().parents[1]
# The tools import their shared helpers as ``_cli`` (their own folder is first on sys.path when run as scripts);
# the tests import them, and the tools loaded as modules, the same way.
sys.path.insert(0, str(REPO / 'tools'))


@pytest.fixture
def compose_config() -> Callable[[Iterable[str]], object]:
    """``compose_config(overrides)``: ``configs/main.yaml`` composed with these Hydra overrides."""

    def compose_(overrides: Iterable[str]):
        with initialize_config_dir(config_dir=str(REPO / 'configs'), version_base='1.2'):
            return compose('main', overrides=list(overrides))

    return compose_


# --- Tiny LMDB data ------------------------------------------------------------------------------------------------


def _png_bytes(color=(255, 0, 0), size: Tuple[int, int] = (48, 16), mode: str = 'RGB') -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, format='PNG')
    return buf.getvalue()


@pytest.fixture
def png_bytes() -> Callable[..., bytes]:
    """``png_bytes(color=(255, 0, 0), size=(W, H)=(48, 16), mode='RGB')``: a solid-colour PNG, encoded."""
    return _png_bytes


@pytest.fixture
def make_lmdb(tmp_path: Path) -> Callable[[str, Iterable[Union[str, Tuple[bytes, str]]]], Path]:
    """``make_lmdb(rel_dir, samples)``: writes an STR LMDB at ``tmp_path / rel_dir`` and returns its directory.

    ``samples`` holds labels (each gets a 48x16 PNG of a distinct colour, so that images identify their record) or
    ``(image_bytes, label)`` pairs.
    """

    def make(rel_dir: str, samples: Iterable[Union[str, Tuple[bytes, str]]]) -> Path:
        records = []
        for i, s in enumerate(samples):
            records.append((_png_bytes(color=(i % 256, (i * 7) % 256, 200)), s) if isinstance(s, str) else s)
        path = tmp_path / rel_dir
        write_lmdb(path, records)
        return path

    return make


# --- The built-in synthetic dataset, tiny (shared by the training / evaluation tests) ---------------------------


@pytest.fixture(scope='session')
def synthetic_root(tmp_path_factory) -> Path:
    """A small rendered dataset in the standard layout: train/synthetic, val/synthetic, test/Synth*."""
    from strhub.data.synthetic import make_dataset

    root = tmp_path_factory.mktemp('synthetic')
    make_dataset(root, num_train=256, num_val=32, num_test=16, seed=0, workers=1, progress=False)
    return root
