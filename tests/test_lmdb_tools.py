"""tools/filter_lmdb.py and tools/lmdb_stats.py (strhub.data.lmdb_tools, strhub.data.lmdb_stats) on LMDBs written
here: each filter criterion with exact counts and output, Greek labels, unreadable records, --overwrite, argument
errors; the numbers of a known LMDB and its contact sheet."""

import json
import re
import subprocess
import sys
import unicodedata
from pathlib import Path

import lmdb
import pytest
from helpers import REPO, load_tool, read_lmdb
from PIL import Image
from _cli import run_cli

from strhub.data.charsets import CHARSETS
from strhub.data.lmdb_io import iter_records
from strhub.data.lmdb_stats import CELL_WIDTH, IMAGE_HEIGHT, LABEL_HEIGHT

filter_tool = load_tool('filter_lmdb')
stats_tool = load_tool('lmdb_stats')


def delete_key(path: Path, key: bytes) -> None:
    env = lmdb.open(str(path))
    with env.begin(write=True) as txn:
        txn.delete(key)
    env.close()


@pytest.fixture
def source(make_lmdb, png_bytes):
    """12 records: 9 readable with a label, an empty label, a corrupt image and a truncated one."""
    records = [
        (png_bytes((1, 0, 0)), 'hello'),  # 1
        (png_bytes((2, 0, 0)), 'Hello'),  # 2: upper case
        (png_bytes((3, 0, 0)), 'ab'),  # 3: short
        (png_bytes((4, 0, 0)), 'x' * 30),  # 4: long
        (png_bytes((5, 0, 0), size=(200, 10)), 'wide'),  # 5: aspect 20
        (png_bytes((6, 0, 0), size=(10, 40)), 'tall'),  # 6: width 10, aspect 0.25
        (png_bytes((7, 0, 0), size=(48, 6)), 'tiny'),  # 7: height 6, aspect 8
        (png_bytes((8, 0, 0)), ''),  # 8: empty label
        (b'not an image', 'bad'),  # 9: undecodable
        (png_bytes((10, 0, 0)), 'café!'),  # 10: outside 36_lowercase even case-folded
        (png_bytes((11, 0, 0), size=(300, 300))[:60], 'cut'),  # 11: truncated: only full decoding finds it
        (png_bytes((12, 0, 0)), 'ok'),  # 12
    ]
    return make_lmdb('src', records), records


def run(tool, argv, capsys):
    """(exit code, stdout, stderr) of ``tool.main(argv)`` under the tools' error convention."""
    with pytest.raises(SystemExit) as e:
        run_cli(tool.main, argv, prog=Path(tool.__file__).name)
    out, err = capsys.readouterr()
    return e.value.code, out, err


def table_rows(out: str) -> dict:
    """``{row: records}`` of the filter report's table (the lines ending in a count and a percentage)."""
    rows = {}
    for line in out.splitlines():
        parts = line.rsplit(None, 2)
        if len(parts) == 3 and parts[1].isdigit() and re.fullmatch(r'\d+\.\d', parts[2]):
            rows[parts[0]] = int(parts[1])
    return rows


READABLE = ['hello', 'Hello', 'ab', 'x' * 30, 'wide', 'tall', 'tiny', '', 'café!', 'ok']
EMPTY = {'label length < 1': 1}  # the empty label, dropped by the default --min_label_length 1


@pytest.mark.parametrize(
    'options, dropped, counts',
    [
        ([], [], EMPTY),
        (['--min_label_length', '3'], ['ab', 'ok'], {'label length < 3': 3}),
        (['--max_label_length', '25'], ['x' * 30], {**EMPTY, 'label length > 25': 1}),
        (['--charset', '36_lowercase'], ['Hello', 'café!'], {**EMPTY, 'characters outside the charset': 2}),
        (['--charset', '36_lowercase', '--fold_case'], ['café!'], {**EMPTY, 'characters outside the charset': 1}),
        (['--min_width', '16'], ['tall'], {**EMPTY, 'width < 16': 1}),
        (['--min_height', '8'], ['tiny'], {**EMPTY, 'height < 8': 1}),
        (['--max_aspect', '10'], ['wide'], {**EMPTY, 'aspect ratio > 10': 1}),
        (['--min_aspect', '0.5'], ['tall'], {**EMPTY, 'aspect ratio < 0.5': 1}),
    ],
)
def test_filter_criterion(source, tmp_path, capsys, options, dropped, counts):
    src, records = source
    code, out, err = run(filter_tool, [str(src), str(tmp_path / 'dst'), *options], capsys)
    assert code == 0, err
    kept = [label for label in READABLE if label and label not in dropped]
    # Byte-for-byte images and labels, in source order, renumbered from 1.
    assert read_lmdb(tmp_path / 'dst') == [r for r in records if r[1] in kept]
    expected = {'kept': len(kept), **counts, 'unreadable: undecodable_image': 2, 'total': 12}
    assert table_rows(out) == expected
    assert 'image-000000009: undecodable_image (cannot identify image file)' in out
    assert 'image-000000011: undecodable_image' in out
    assert f'Wrote {len(kept)} of 12 records to' in out
    if '--fold_case' in options:
        assert "Characters outside the charset: 'é' 1, '!' 1" in out


def test_filter_library_report(source, tmp_path):
    from strhub.data.lmdb_tools import Criteria, filter_lmdb

    src, _ = source
    delete_key(src, b'label-000000012')
    report = filter_lmdb(src, tmp_path / 'out', Criteria(charset=CHARSETS['36_lowercase'], max_label_length=25))
    assert (report.total, report.kept) == (12, 5)
    assert report.reasons == ['label length < 1', 'label length > 25', 'characters outside the charset']
    assert dict(report.dropped) == {'label length < 1': 1, 'label length > 25': 1, 'characters outside the charset': 2}
    assert [(r.key, r.reason) for r in report.bad_records] == [
        ('image-000000009', 'undecodable_image'),
        ('image-000000011', 'undecodable_image'),
        ('label-000000012', 'missing_label'),
    ]
    assert dict(report.outside_chars) == {'H': 1, 'é': 1, '!': 1}
    assert [label for _, label in read_lmdb(tmp_path / 'out')] == ['hello', 'ab', 'wide', 'tall', 'tiny']


def test_filter_greek(make_lmdb, tmp_path, capsys):
    decomposed = unicodedata.normalize('NFD', 'καλημέρα')  # judged composed, written as stored
    labels = [decomposed, 'ΑΘΗΝΑ', 'Σοφία', 'мир', 'abc', 'ΟΔΟΣ']
    src = make_lmdb('greek', labels)
    code, out, _ = run(filter_tool, [str(src), str(tmp_path / 'all'), '--charset', '125_latin-greek'], capsys)
    assert code == 0
    assert [label for _, label in read_lmdb(tmp_path / 'all')] == [decomposed, 'ΑΘΗΝΑ', 'Σοφία', 'abc', 'ΟΔΟΣ']
    assert "Characters outside the charset: 'м' 1, 'и' 1, 'р' 1" in out

    lower_greek = 'αβγδεζηθικλμνξοπρσςτυφχψωάέήίόύώ'  # the characters themselves, no upper case: folding lower-cases
    argv = [str(src), str(tmp_path / 'lower'), '--charset', lower_greek, '--fold_case', '--max_label_length', '5']
    code, out, _ = run(filter_tool, argv, capsys)
    assert code == 0
    assert [label for _, label in read_lmdb(tmp_path / 'lower')] == ['ΑΘΗΝΑ', 'Σοφία', 'ΟΔΟΣ']  # as stored
    assert 'label length > 5' in out and "'Σ'" not in out


def test_filter_overwrite(source, make_lmdb, tmp_path, capsys):
    src, _ = source
    dst = make_lmdb('dst', ['old'])
    (dst / 'notes.txt').write_text('kept')
    code, _, err = run(filter_tool, [str(src), str(dst)], capsys)
    assert code == 2 and err.count('\n') == 1
    assert err.startswith('filter_lmdb.py: error: an LMDB already exists at') and '--overwrite' in err
    assert [label for _, label in read_lmdb(dst)] == ['old']

    code, _, _ = run(filter_tool, [str(src), str(dst), '--overwrite', '--max_label_length', '2'], capsys)
    assert code == 0
    assert [label for _, label in read_lmdb(dst)] == ['ab', 'ok']
    assert (dst / 'notes.txt').read_text() == 'kept' and [p.name for p in dst.iterdir() if p.name.startswith('.')] == []

    # In place: the source is read whole before the new LMDB replaces it.
    code, _, _ = run(filter_tool, [str(dst), str(dst), '--overwrite', '--charset', 'ab'], capsys)
    assert code == 0 and [label for _, label in read_lmdb(dst)] == ['ab']

    # Nothing kept: exit 1, the destination left as it was.
    code, out, err = run(filter_tool, [str(src), str(dst), '--overwrite', '--min_width', '1000'], capsys)
    assert code == 1 and 'width < 1000' in out and 'nothing written' in err
    assert [label for _, label in read_lmdb(dst)] == ['ab']
    code, _, _ = run(filter_tool, [str(src), str(tmp_path / 'new'), '--min_width', '1000'], capsys)
    assert code == 1 and not (tmp_path / 'new').exists()


def test_filter_bad_arguments(source, tmp_path, capsys):
    src, _ = source
    (tmp_path / 'file').write_text('x')
    (tmp_path / 'foreign').mkdir()
    (tmp_path / 'foreign' / 'data.mdb').write_bytes(b'\0' * 100)
    dst = str(tmp_path / 'dst')
    cases = [
        ([str(tmp_path / 'missing'), dst], 'LMDB dataset directory not found'),
        ([str(tmp_path / 'foreign'), dst], 'cannot open LMDB'),
        ([str(src), str(tmp_path / 'file')], 'exists and is not a folder'),
        ([str(src), dst, '--min_label_length', '-1'], 'min_label_length must be >= 0 (got -1)'),
        ([str(src), dst, '--min_label_length', '5', '--max_label_length', '2'], 'max_label_length 2 < min_label'),
        ([str(src), dst, '--max_aspect', '0'], 'max_aspect must be > 0'),
        ([str(src), dst, '--min_aspect', '3', '--max_aspect', '2'], 'max_aspect 2 < min_aspect 3'),
        ([str(src), dst, '--charset', 'aab'], "--charset: charset 'aab' repeats 'a'"),
        ([str(src), dst, '--fold_case'], '--fold_case needs --charset'),
    ]
    for argv, message in cases:
        code, out, err = run(filter_tool, argv, capsys)
        assert code == 2, argv
        assert err.startswith('filter_lmdb.py: error: ') and err.count('\n') == 1 and message in err, err
    assert not Path(dst).exists()


def test_tools_error_line_and_help():
    for tool, argv, message in [
        ('filter_lmdb.py', ['a', 'b', '--min_width', 'x'], "argument --min_width: invalid int value: 'x'"),
        ('lmdb_stats.py', ['a', '--samples', '0'], '--samples must be >= 1 (got 0)'),
    ]:
        run_ = subprocess.run([sys.executable, str(REPO / 'tools' / tool), *argv], capture_output=True, text=True)
        assert run_.returncode == 2 and run_.stderr.splitlines()[-1] == f'{tool}: error: {message}'
    help_ = subprocess.run([sys.executable, str(REPO / 'tools' / 'filter_lmdb.py'), '--help'], capture_output=True)
    assert b'--min_label_length MIN_LABEL_LENGTH' in help_.stdout and b'(default: 1)' in help_.stdout


@pytest.fixture
def known(make_lmdb, png_bytes):
    """6 records: 5 readable (sizes 48x16 x3, 20x10, 100x20), one with its image key missing."""
    records = [
        (png_bytes(size=(48, 16)), 'aab'),
        (png_bytes(size=(48, 16)), 'ab'),
        (png_bytes(size=(20, 10)), 'Zé'),
        (png_bytes(size=(100, 20)), 'abcd'),
        (png_bytes(size=(48, 16)), 'b'),
        (png_bytes(), 'lost'),
    ]
    root = make_lmdb('known', records)
    delete_key(root, b'image-000000006')
    return root


def test_stats_numbers(known, tmp_path, capsys):
    argv = [str(known), '--charset', '36_lowercase', '--fold_case', '--json', str(tmp_path / 's.json'), '--top', '2']
    argv += ['--rare', '1', '--contact_sheet', str(tmp_path / 'sheet.png'), '--samples', '4', '--columns', '3']
    code, out, err = run(stats_tool, argv, capsys)
    assert code == 0, err
    numbers = json.loads((tmp_path / 's.json').read_text(encoding='utf-8'))
    assert numbers['records'] == 6 and numbers['readable'] == 5
    assert numbers['unreadable'] == {
        'count': 1,
        'by_reason': {'missing_image': 1},
        'records': [{'key': 'image-000000006', 'reason': 'missing_image', 'detail': 'image key missing'}],
    }
    assert numbers['label_length'] == {
        'min': 1,
        'median': 2.0,
        'mean': 2.4,
        'max': 4,
        'histogram': {'1': 1, '2': 2, '3': 1, '4': 1},
    }
    chars = numbers['characters']
    assert chars['counts'] == {'a': 4, 'b': 4, 'c': 1, 'd': 1, 'Z': 1, 'é': 1}
    assert (chars['distinct'], chars['total'], chars['labels_with_outside_characters']) == (6, 12, 1)
    assert chars['outside_charset'] == {'é': 1}  # 'Z' folds to 'z'
    assert chars['charset_unused'] == '0123456789efghijklmnopqrstuvwxy'
    assert numbers['image_size'] == {
        'width': {'min': 20, 'median': 48.0, 'mean': 52.8, 'max': 100},
        'height': {'min': 10, 'median': 16.0, 'mean': 15.6, 'max': 20},
        'aspect_ratio': {'min': 2.0, 'median': 3.0, 'mean': 3.2, 'max': 5.0},
    }
    assert 'LMDB ' in out and '6 records, 5 readable, 1 unreadable' in out
    assert '  image-000000006: missing_image (image key missing)' in out
    assert 'Label length: min 1, median 2, mean 2.40, max 4' in out
    assert "1 outside the charset (flagged *), in 1 labels: 'é' 1" in out
    assert 'Most common 2:' in out and 'Rarest 1:' in out
    assert [line.split()[:2] for line in out.splitlines() if line.startswith(('width', 'height', 'aspect'))] == [
        ['width', '20'],
        ['height', '10'],
        ['aspect', '(w/h)'],
    ]
    # One cell per sample: 4 samples, 3 to a row.
    with Image.open(tmp_path / 'sheet.png') as sheet:
        assert sheet.format == 'PNG' and sheet.size == (3 * CELL_WIDTH, 2 * (IMAGE_HEIGHT + LABEL_HEIGHT))
    indices = numbers['contact_sheet']['indices']
    assert len(indices) == 4 and set(indices) <= {1, 2, 3, 4, 5}


def test_contact_sheet_seeded_and_all(known, tmp_path, capsys):
    from strhub.data.lmdb_stats import lmdb_stats, sample_indices

    stats = lmdb_stats(known)
    assert sample_indices(stats, 3, seed=1) == sample_indices(stats, 3, seed=1)
    assert sample_indices(stats, 100) == [1, 2, 3, 4, 5]  # fewer readable records than asked: all of them
    code, out, _ = run(stats_tool, [str(known), '--contact_sheet', str(tmp_path / 'all.png')], capsys)
    assert code == 0 and 'outside' not in out
    with Image.open(tmp_path / 'all.png') as sheet:
        assert sheet.size == (5 * CELL_WIDTH, IMAGE_HEIGHT + LABEL_HEIGHT)
    for argv, message in [
        ([str(tmp_path / 'missing')], 'LMDB dataset directory not found'),
        ([str(known), '--json', str(tmp_path)], '--json: is a directory'),
        ([str(known), '--fold_case'], '--fold_case needs --charset'),
    ]:
        code, _, err = run(stats_tool, argv, capsys)
        assert code == 2 and err.startswith('lmdb_stats.py: error: ') and err.count('\n') == 1 and message in err


def test_iter_records(known):
    records = list(iter_records(known, [2, 6]))
    assert [(i, label) for i, label, _ in records] == [(2, b'ab'), (6, b'lost')]
    assert records[0][2].startswith(b'\x89PNG') and records[1][2] is None
    assert len(list(iter_records(known))) == 6
