"""What the tests share: the original's fixture files, the command-line tools loaded as modules, the smallest model
config, reading an LMDB."""

import importlib.util
from pathlib import Path
from types import ModuleType

import lmdb
import pytest

REPO = Path(__file__).resolve().parents[1]
# The checkpoint and images written by the original code (its inputs and outputs beside them), kept byte for byte.
FIXTURES = REPO / 'tests' / 'fixtures' / 'original_tiny'
FIXTURE_CKPT = FIXTURES / 'clip4str_tiny.ckpt'
FIXTURE_IMAGES = ['img0_hello.png', 'img1_clip4str.png', 'img2_Text.png', 'img3_2024ab.png']
# The tiny experiment made tinier still (one block per tower, width 64), so that a CPU step takes a fraction of a
# second: Hydra overrides of configs/main.yaml.
SMALL_MODEL = [
    '+experiment=clip4str-tiny',
    'model.clip_arch.vision_layers=1',
    'model.clip_arch.text_layers=1',
    'model.clip_arch.vision_width=64',
    'model.clip_arch.text_width=64',
    'model.clip_arch.embed_dim=64',
]


def load_tool(name: str) -> ModuleType:
    """``tools/<name>.py`` as a module (under a name that cannot shadow the standard library's ``test``)."""
    spec = importlib.util.spec_from_file_location(f'_tool_{name}', REPO / 'tools' / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def require_fixtures(names: list[str] = FIXTURE_IMAGES) -> None:
    """Fails the test (never skips it) when the original's checkpoint or one of the images ``names`` is missing."""
    missing = [p for p in [FIXTURE_CKPT] + [FIXTURES / n for n in names] if not p.is_file()]
    if missing:
        pytest.fail(f'fixture files missing from {FIXTURES}: {missing}')


def read_lmdb(path: Path):
    """The (image bytes, label) records of an STR LMDB, checking that it holds exactly num-samples 1-based pairs."""
    env = lmdb.open(str(path), readonly=True, lock=False)
    with env.begin() as txn:
        n = int(txn.get(b'num-samples'))
        keys = {k for k, _ in txn.cursor()}
        records = [(txn.get(b'image-%09d' % i), txn.get(b'label-%09d' % i).decode()) for i in range(1, n + 1)]
    env.close()
    assert keys == {b'num-samples'} | {b'%s-%09d' % (k, i) for k in (b'image', b'label') for i in range(1, n + 1)}
    return records
