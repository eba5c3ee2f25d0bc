"""tools/create_lmdb_dataset.py: images + ground-truth file -> STR LMDB, skipping bad samples with a report."""

import errno
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from helpers import load_tool, read_lmdb
from _cli import run_cli

import strhub.data.create_lmdb as create_lmdb
import strhub.data.lmdb_io as lmdb_io

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / 'tools' / 'create_lmdb_dataset.py'


tool = load_tool('create_lmdb_dataset')


def _image(fmt: str, mode: str = 'RGB', size=(40, 16)) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, 120).save(buf, format=fmt)
    return buf.getvalue()


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


def _main(*args) -> int:
    """The tool in-process, as its command line runs it: the exit code."""
    with pytest.raises(SystemExit) as e:
        run_cli(tool.main, list(map(str, args)), prog='create_lmdb_dataset.py')
    return e.value.code


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


def _invalid_gt(tmp_path) -> Path:
    gt = tmp_path / 'bad_gt.txt'
    gt.write_text('missing.png\tgone\nno_separator_here\n')
    return gt


def test_failed_overwrite_keeps_old_lmdb(folder, tmp_path):
    root, gt, expected = folder
    out = tmp_path / 'lmdb'
    tool.create_lmdb_dataset(root, gt, out)
    (out / 'notes.txt').write_text('mine')
    report = tool.create_lmdb_dataset(root, _invalid_gt(tmp_path), out, overwrite=True)
    assert report.written == 0 and 'nothing written' in str(report)
    assert read_lmdb(out) == expected  # the old LMDB, untouched
    assert sorted(p.name for p in out.iterdir()) == ['data.mdb', 'lock.mdb', 'notes.txt']  # no temporary folder
    # A successful overwrite replaces the LMDB and keeps the user's other files.
    gt.write_text('a.png\tOnly\n')
    assert tool.create_lmdb_dataset(root, gt, out, overwrite=True).written == 1
    assert read_lmdb(out) == [(expected[0][0], 'Only')]
    assert sorted(p.name for p in out.iterdir()) == ['data.mdb', 'lock.mdb', 'notes.txt']


def test_failed_run_leaves_no_output(folder, tmp_path):
    root, gt, expected = folder
    out = tmp_path / 'new' / 'lmdb'
    r = _run(root, _invalid_gt(tmp_path), out)
    assert r.returncode == 1 and 'no valid sample' in r.stderr and 'Traceback' not in r.stderr
    assert not out.exists() and list(out.parent.iterdir()) == []  # nothing blocks the next attempt
    r = _run(root, gt, out)
    assert r.returncode == 0, r.stderr
    assert read_lmdb(out) == expected and list(out.parent.iterdir()) == [out]


def test_interrupted_run_keeps_old_lmdb(folder, tmp_path, monkeypatch, capsys):
    root, gt, expected = folder
    out = tmp_path / 'lmdb'
    tool.create_lmdb_dataset(root, gt, out)
    checked = []

    def interrupt(data):  # Ctrl-C while the second image is checked
        checked.append(data)
        if len(checked) == 2:
            raise KeyboardInterrupt
        return None

    monkeypatch.setattr(create_lmdb, '_check_image', interrupt)
    with pytest.raises(KeyboardInterrupt):
        tool.create_lmdb_dataset(root, gt, out, overwrite=True)
    assert read_lmdb(out) == expected
    assert sorted(p.name for p in out.iterdir()) == ['data.mdb', 'lock.mdb']
    checked.clear()
    with pytest.raises(KeyboardInterrupt):
        tool.create_lmdb_dataset(root, gt, tmp_path / 'other')
    assert sorted(p.name for p in tmp_path.iterdir()) == ['gt.txt', 'images', 'lmdb']  # no 'other', no temporary
    checked.clear()
    assert _main(root, gt, out, '--overwrite') == 130
    assert (
        capsys.readouterr().err.splitlines()[-1] == f'create_lmdb_dataset.py: error: interrupted: {out} left as it was'
    )
    assert read_lmdb(out) == expected


def test_unwritable_destination(folder, tmp_path):
    root, gt, _ = folder
    blocker = tmp_path / 'a_file'
    blocker.write_text('')
    r = _run(root, gt, blocker / 'lmdb')  # the parent is a regular file: fails even for root
    assert r.returncode == 2 and r.stdout == ''  # refused before any image is read (no report)
    assert r.stderr.strip().splitlines() == [
        f'create_lmdb_dataset.py: error: cannot write the LMDB in {blocker}: not a folder'
    ]
    r = _run(root, gt, blocker)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        f'create_lmdb_dataset.py: error: {blocker} exists and is not a folder'
    ]


def test_permission_denied_is_one_line(folder, tmp_path, monkeypatch, capsys):
    # What a read-only folder gives a non-root user (test_read_only_destination), simulated so that it runs as root.
    def denied(prefix, dir):
        raise PermissionError(errno.EACCES, 'Permission denied', dir)

    root, gt, _ = folder
    monkeypatch.setattr(lmdb_io.tempfile, 'mkdtemp', denied)
    assert _main(root, gt, tmp_path / 'lmdb') == 2
    assert capsys.readouterr() == (
        '',
        f'create_lmdb_dataset.py: error: cannot write the LMDB in {tmp_path}: Permission denied\n',
    )


@pytest.mark.skipif(os.geteuid() == 0, reason='root writes to read-only folders')
def test_read_only_destination(folder, tmp_path):
    root, gt, _ = folder
    locked = tmp_path / 'locked'
    locked.mkdir(mode=0o555)
    try:
        r = _run(root, gt, locked / 'lmdb')
    finally:
        locked.chmod(0o755)
    assert r.returncode == 2 and r.stdout == '' and 'Traceback' not in r.stderr
    assert r.stderr.strip().splitlines() == [
        f'create_lmdb_dataset.py: error: cannot write the LMDB in {locked}: Permission denied'
    ]
