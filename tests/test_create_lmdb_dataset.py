"""tools/create_lmdb_dataset.py: images + ground-truth file -> STR LMDB, skipping bad samples with a report."""

import importlib.util
import io
import subprocess
import sys
from pathlib import Path

import lmdb
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / 'tools' / 'create_lmdb_dataset.py'


def _load_tool():
    spec = importlib.util.spec_from_file_location('create_lmdb_dataset', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tool = _load_tool()


def _image(fmt: str, mode: str = 'RGB', size=(40, 16)) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, 120).save(buf, format=fmt)
    return buf.getvalue()


def read_lmdb(path: Path):
    env = lmdb.open(str(path), readonly=True, lock=False)
    with env.begin() as txn:
        n = int(txn.get(b'num-samples'))
        out = [(txn.get(b'image-%09d' % i), txn.get(b'label-%09d' % i).decode()) for i in range(1, n + 1)]
    env.close()
    return out


@pytest.fixture
def folder(tmp_path):
    """A folder of images and a GT file with 4 good lines and 6 bad ones (plus a blank line, ignored)."""
    root = tmp_path / 'images'
    (root / 'sub').mkdir(parents=True)
    good = {
        'a.png': (_image('PNG'), 'Hello'),
        'b.jpg': (_image('JPEG', 'L'), 'w0rld!'),
        'sub/c.png': (_image('PNG', 'RGBA'), 'two words'),
        'd.png': (_image('PNG'), 'spaced'),
    }
    for name, (data, _) in good.items():
        (root / name).write_bytes(data)
    (root / 'corrupt.jpg').write_bytes(bytes(range(256)) * 4)
    (root / 'empty.png').write_bytes(b'')
    (root / 'truncated.jpg').write_bytes(_image('JPEG', size=(200, 200))[:300])
    lines = [
        'a.png\tHello',  # 1
        'b.jpg\tw0rld!',  # 2
        'corrupt.jpg\tbad',  # 3: invalid image
        'missing.png\tgone',  # 4: missing image
        'a.png\t',  # 5: empty label
        'no_separator_here',  # 6: malformed
        '',  # 7: blank, ignored
        'sub/c.png\ttwo words',  # 8: tab format keeps spaces in the label
        'd.png spaced',  # 9: single-space separator
        'empty.png\tnothing',  # 10: invalid image (zero bytes)
        'truncated.jpg\tcut',  # 11: invalid image (truncated)
    ]
    gt = tmp_path / 'gt.txt'
    gt.write_text('\n'.join(lines) + '\n', encoding='utf-8')
    return root, gt, [good[n] for n in ('a.png', 'b.jpg', 'sub/c.png', 'd.png')]


def test_create_lmdb_dataset(folder, tmp_path):
    root, gt, expected = folder
    out = tmp_path / 'lmdb'
    report = tool.create_lmdb_dataset(root, gt, out)
    assert read_lmdb(out) == expected  # original bytes, GT order
    assert report.written == 4 and report.lines == 10
    assert dict(report.skipped) == {'invalid image': 3, 'missing image': 1, 'empty label': 1, 'malformed line': 1}
    assert [(no, why.split(' (')[0]) for no, why, _ in report.examples] == [
        (3, 'invalid image'),
        (4, 'missing image'),
        (5, 'empty label'),
        (6, 'malformed line'),
        (10, 'invalid image'),
        (11, 'invalid image'),
    ]
    text = str(report)
    assert 'Wrote 4 samples' in text and 'line 4: missing image' in text
    with pytest.raises(FileExistsError):
        tool.create_lmdb_dataset(root, gt, out)
    gt.write_text('a.png\tOnly\n')
    assert tool.create_lmdb_dataset(root, gt, out, overwrite=True).written == 1
    assert read_lmdb(out) == [(expected[0][0], 'Only')]


def test_missing_inputs_raise(folder, tmp_path):
    root, gt, _ = folder
    with pytest.raises(FileNotFoundError, match='nope'):
        tool.create_lmdb_dataset(root, tmp_path / 'nope.txt', tmp_path / 'out')
    with pytest.raises(FileNotFoundError, match='nodir'):
        tool.create_lmdb_dataset(tmp_path / 'nodir', gt, tmp_path / 'out')


def _run(*args):
    return subprocess.run([sys.executable, str(TOOL), *map(str, args)], capture_output=True, text=True, cwd=ROOT)


def test_cli(folder, tmp_path):
    root, gt, _ = folder
    r = _run(root, tmp_path / 'missing_gt.txt', tmp_path / 'out')
    assert r.returncode == 2 and 'missing_gt.txt' in r.stderr and 'Traceback' not in r.stderr
    r = _run(tmp_path / 'no_such_dir', gt, tmp_path / 'out')
    assert r.returncode == 2 and 'no_such_dir' in r.stderr and 'Traceback' not in r.stderr
    r = _run(root, gt, tmp_path / 'out')
    assert r.returncode == 0, r.stderr
    assert 'Wrote 4 samples' in r.stdout and 'missing image: 1' in r.stdout
    assert len(read_lmdb(tmp_path / 'out')) == 4
