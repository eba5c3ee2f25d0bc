"""``tools/test.py`` on small generated benchmark LMDBs, with the metrics checked against an independent computation."""

import csv
import functools
import io
import json
import math
import os
import re
import shutil
import string
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from strhub.data.lmdb_io import write_lmdb
from strhub.evaluation import BatchResult, Evaluation, SetResult
from _cli import CLIError, resolve_checkpoint
from helpers import FIXTURES, FIXTURE_CKPT, FIXTURE_IMAGES, REPO, load_tool, require_fixtures

ENV = {**os.environ, 'OMP_NUM_THREADS': '1'}  # see test_read.one_thread
BATCH = 4
CHARSET_36 = string.digits + string.ascii_lowercase
CHARSET_94 = string.digits + string.ascii_lowercase + string.ascii_uppercase + string.punctuation

# The original's print_results_table format strings (PARSeq/CLIP4STR test.py), spec §8.1.
HEADER = '| {:<{w}} | # samples | Accuracy | 1 - NED | Confidence | Label Length |'
ALIGN = '|:{:-<{w}}:|----------:|---------:|--------:|-----------:|-------------:|'
SEP = '|-{:-<{w}}-|-----------|----------|---------|------------|--------------|'
ROW = '| {:<{w}} | {:>9} | {:>8.2f} | {:>7.2f} | {:>10.2f} | {:>12.2f} |'

# name -> (fixture image index per sample, label per sample); 'P' = the model's own (adapted) prediction.
SETS = {
    'IIIT5k': ([0, 1, 2, 3, 0], ['P', 'P', 'hello', 'P', 'wrongword']),
    'SVT': ([1, 2, 3], ['svt', 'street', 'sign']),
    'CUTE80': ([3, 0], ['P', 'P']),
    'SynthWords': ([2, 1, 0], ['P', 'abc', 'x']),
    'EmptyAfterFilter': ([0], ['!!!']),  # no label left with the 36-char test charset
}
MISSING_STD = ['IC13_1015', 'IC15_1811', 'IC15_2077', 'SVTP', 'HOST', 'WOST']


@pytest.fixture(autouse=True, scope='module')
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope='module')
def fixture_images() -> list:
    require_fixtures()
    return [(FIXTURES / n).read_bytes() for n in FIXTURE_IMAGES]


def _link(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.symlink(src, dst)
    except OSError:
        shutil.copy(src, dst)
    return dst


def levenshtein(a: str, b: str) -> int:
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


@functools.lru_cache(maxsize=None)
def _model(charset_test: str, refine_iters: int = 1):
    from strhub.models import load_from_checkpoint

    return load_from_checkpoint(FIXTURE_CKPT, charset_test=charset_test, refine_iters=refine_iters)


def predict(images: list, charset_test: str = CHARSET_36, refine_iters: int = 1) -> list:
    """(adapted prediction, confidence) per image, by hand: the original's test transform, batches of BATCH."""
    model = _model(charset_test, refine_iters)
    transform = T.Compose(
        [T.Resize(tuple(model.hparams.img_size), T.InterpolationMode.BICUBIC), T.ToTensor(), T.Normalize(0.5, 0.5)]
    )
    out = []
    with torch.inference_mode():
        for i in range(0, len(images), BATCH):
            x = torch.stack([transform(Image.open(io.BytesIO(b)).convert('RGB')) for b in images[i : i + BATCH]])
            preds, probs = model.tokenizer.decode(model(x).softmax(-1))
            out += [(model.charset_adapter(p), q.prod().item()) for p, q in zip(preds, probs)]
    return out


def expected_metrics(preds: list, labels: list) -> dict:
    """Spec §8.1: accuracy, 1 - NED (ICDAR 2019), confidence (x100) and mean *predicted* length."""
    n = len(labels)
    if n == 0:
        return dict(
            num_samples=0, accuracy=math.nan, one_minus_ned=math.nan, confidence=math.nan, label_length=math.nan
        )
    ned = sum(levenshtein(p, gt) / max(len(p), len(gt)) for (p, _), gt in zip(preds, labels))
    return dict(
        num_samples=n,
        accuracy=100 * sum(p == gt for (p, _), gt in zip(preds, labels)) / n,
        one_minus_ned=100 * (1 - ned / n),
        confidence=100 * sum(c for _, c in preds) / n,
        label_length=sum(len(p) for p, _ in preds) / n,
    )


def combine(rows: list) -> dict:
    """Sample-weighted means, as the original's Combined row."""
    n = sum(m['num_samples'] for m in rows)
    out = {'num_samples': n}
    for k in ('accuracy', 'one_minus_ned', 'confidence', 'label_length'):
        out[k] = sum(m[k] * m['num_samples'] for m in rows if m['num_samples']) / n
    return out


def table(rows: list, combined: dict) -> list:
    w = max([len(n) for n, _ in rows] + [len('Dataset'), len('Combined')])

    def row(name, m):
        return ROW.format(
            name, m['num_samples'], m['accuracy'], m['one_minus_ned'], m['confidence'], m['label_length'], w=w
        )

    return [
        HEADER.format('Dataset', w=w),
        ALIGN.format('----', w=w),
        *[row(n, m) for n, m in rows],
        SEP.format('----', w=w),
        row('Combined', combined),
    ]


@pytest.fixture(scope='module')
def data(tmp_path_factory, fixture_images):
    """LMDBs under <root>/test/ and the labels (with the model's own predictions where SETS says 'P')."""
    root = tmp_path_factory.mktemp('data')
    labels, preds = {}, {}
    for name, (idx, spec) in SETS.items():
        preds[name] = predict([fixture_images[i] for i in idx])
        labels[name] = [p if s == 'P' else s for (p, _), s in zip(preds[name], spec)]
        write_lmdb(root / 'test' / name, [(fixture_images[i], y) for i, y in zip(idx, labels[name])])
    (root / 'test' / 'not_an_lmdb').mkdir()  # ignored: no data.mdb
    return root, labels, preds


def _check_metrics(got: dict, want: dict) -> None:
    assert got['num_samples'] == want['num_samples']
    for k in ('accuracy', 'one_minus_ned', 'confidence', 'label_length'):
        if want['num_samples'] == 0:
            assert got[k] is None or math.isnan(got[k])
        else:
            assert got[k] == pytest.approx(want[k], rel=1e-5, abs=1e-9), k


def test_tool_end_to_end(tmp_path, data):
    root, labels, preds = data
    ckpt = _link(FIXTURE_CKPT, tmp_path / 'clip4str_tiny.ckpt')  # the log is written next to the checkpoint
    out_json, out_csv = tmp_path / 'results.json', tmp_path / 'results.csv'
    cmd = [
        sys.executable,
        'tools/test.py',
        str(ckpt),
        '--data_root',
        str(root),
        '--device',
        'cpu',
        '--num_workers',
        '0',
        '--batch_size',
        str(BATCH),
        '--out',
        str(out_json),
        '--out',
        str(out_csv),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=ENV, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert 'Traceback' not in proc.stderr
    stdout = proc.stdout

    # Expected numbers, computed independently (same images, same batches, own edit distance).
    want = {}
    for name in SETS:
        kept = [(p, y) for p, y in zip(preds[name], labels[name]) if y != '!!!']  # the 36-char label filter
        want[name] = expected_metrics([p for p, _ in kept], [y for _, y in kept])
    assert want['IIIT5k']['accuracy'] == 60 and want['SVT']['accuracy'] == 0 and want['CUTE80']['accuracy'] == 100
    assert want['SynthWords']['accuracy'] == pytest.approx(100 / 3)
    bench, other = ['IIIT5k', 'SVT', 'CUTE80'], ['EmptyAfterFilter', 'SynthWords']

    # Printed report: one line per missing standard set, the original's tables, the Time line.
    for s in MISSING_STD:
        assert stdout.count(f'Test set {s} not found') == 1
    assert len(re.findall('not found', stdout)) == len(MISSING_STD)
    bench_table = table([(s, want[s]) for s in bench], combine([want[s] for s in bench]))
    other_table = table([(s, want[s]) for s in other], combine([want[s] for s in other]))
    report = '\n'.join(['Benchmark set:', *bench_table, '', '', 'Other set:', *other_table, '', ''])
    assert report in stdout
    assert '|      nan |' in stdout  # EmptyAfterFilter: no sample left
    assert 'New set:' not in stdout and 'not_an_lmdb' not in stdout
    assert re.search(r'^Time: Total [\d.]+s, Average [\d.]+ms\. Total samples 13\.$', stdout, re.M)
    log = (tmp_path / 'clip4str_tiny.ckpt.log_newFalse.txt').read_text()
    assert report in log and 'Total samples 13.' in log

    # JSON and CSV hold the same numbers.
    doc = json.loads(out_json.read_text())
    assert list(doc['sets']) == bench + other
    for s in bench + other:
        _check_metrics(doc['sets'][s], want[s])
    assert doc['groups']['Benchmark']['sets'] == bench and doc['groups']['Other']['sets'] == other
    _check_metrics(doc['groups']['Benchmark']['combined'], combine([want[s] for s in bench]))
    _check_metrics(doc['groups']['Other']['combined'], combine([want[s] for s in other]))
    assert doc['groups']['Benchmark']['combined']['num_samples'] == 10
    assert sorted(doc['skipped']) == sorted(MISSING_STD)
    assert doc['time']['total_samples'] == 13 and doc['charset_test'] == CHARSET_36
    with open(out_csv, newline='') as f:
        rows = list(csv.DictReader(f))
    assert [(r['group'], r['dataset']) for r in rows] == [
        *[('Benchmark', s) for s in bench],
        ('Benchmark', 'Combined'),
        *[('Other', s) for s in other],
        ('Other', 'Combined'),
    ]
    for r in rows:
        ref = doc['sets'][r['dataset']] if r['dataset'] != 'Combined' else doc['groups'][r['group']]['combined']
        assert int(r['num_samples']) == ref['num_samples']
        for k in ('accuracy', 'one_minus_ned', 'confidence', 'label_length'):
            assert r[k] == 'nan' if ref[k] is None else float(r[k]) == pytest.approx(ref[k], rel=1e-12)


def test_tool_options_and_checkpoint_dir(tmp_path, data, fixture_images, capsys):
    """--cased --punctuation (94-char test charset, also given to the model), --new (missing sets), --std (no Other
    group), --refine_iters, and a checkpoint directory (best val_accuracy in the name; last.ckpt is broken)."""
    root, labels, _ = data
    ckpts = tmp_path / 'checkpoints'
    best = _link(FIXTURE_CKPT, ckpts / 'epoch=3-step=40-val_accuracy=12.3400-val_NED=50.0000.ckpt')
    _link(FIXTURE_CKPT, ckpts / 'epoch=1-step=20-val_accuracy=9.0000-val_NED=40.0000.ckpt')
    (ckpts / 'last.ckpt').write_bytes(b'broken')
    tool = load_tool('test')
    argv = [
        str(ckpts),
        '--data_root',
        str(root),
        '--device',
        'cpu',
        '--num_workers',
        '0',
        '--batch_size',
        str(BATCH),
        '--cased',
        '--punctuation',
        '--new',
        '--std',
        '--refine_iters',
        '0',
        '--out',
        str(tmp_path / 'r.json'),
    ]
    assert tool.main(argv) == 0
    stdout = capsys.readouterr().out
    assert f'Checkpoint: {best}' in stdout
    for s in MISSING_STD + ['ArT', 'COCOv1.4', 'Uber']:
        assert stdout.count(f'Test set {s} not found') == 1
    assert 'Other set:' not in stdout and 'SynthWords' not in stdout
    doc = json.loads((tmp_path / 'r.json').read_text())
    assert doc['charset_test'] == CHARSET_94 and doc['model_kwargs']['refine_iters'] == 0
    assert list(doc['groups']) == ['Benchmark'] and doc['new'] and doc['std']
    for name in ('IIIT5k', 'SVT', 'CUTE80'):
        idx = SETS[name][0]
        preds = predict([fixture_images[i] for i in idx], charset_test=CHARSET_94, refine_iters=0)
        _check_metrics(doc['sets'][name], expected_metrics(preds, labels[name]))
    assert doc['sets']['IIIT5k']['accuracy'] == 0  # raw predictions keep case and punctuation, labels don't
    assert (ckpts / f'{best.name}.log_newTrue.txt').is_file()


def test_tool_errors(tmp_path, data, capsys):
    root = data[0]
    tool = load_tool('test')
    with pytest.raises(CLIError, match='checkpoint not found'):
        tool.main([str(tmp_path / 'nope.ckpt'), '--data_root', str(root)])
    with pytest.raises(CLIError, match='no test directory'):
        tool.main([str(FIXTURE_CKPT), '--data_root', str(tmp_path)])
    with pytest.raises(CLIError, match='name:type=value'):
        tool.main([str(FIXTURE_CKPT), '--data_root', str(root), 'refine_iters=0'])
    with pytest.raises(SystemExit):
        tool.main([str(FIXTURE_CKPT), '--data_root', str(root), '--out', str(tmp_path / 'r.txt')])
    assert 'must end in .json or .csv' in capsys.readouterr().err
    proc = subprocess.run(
        [sys.executable, 'tools/test.py', str(tmp_path / 'nope.ckpt'), '--data_root', str(root)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=ENV,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f'test.py: error: checkpoint not found: {tmp_path / "nope.ckpt"}']


def test_resolve_checkpoint(tmp_path):
    f = tmp_path / 'model.ckpt'
    f.write_bytes(b'')
    assert resolve_checkpoint(f) == f
    d = tmp_path / 'ckpts'
    d.mkdir()
    with pytest.raises(CLIError, match='no checkpoint'):
        resolve_checkpoint(d)
    (d / 'last.ckpt').write_bytes(b'')
    assert resolve_checkpoint(d) == d / 'last.ckpt'
    for name in (
        'epoch=1-step=10-val_accuracy=50.0000-val_NED=60.0000.ckpt',
        'epoch=2-step=20-val_accuracy=70.5000-val_NED=80.0000.ckpt',
        'epoch=2-step=20-val_accuracy=70.5000-val_NED=80.0000.ckpt.log_newFalse.txt',
        'epoch=9-step=90-val_accuracy=oops-val_NED=1.0000.ckpt',
    ):
        (d / name).write_bytes(b'')
    assert resolve_checkpoint(d).name == 'epoch=2-step=20-val_accuracy=70.5000-val_NED=80.0000.ckpt'
    with pytest.raises(CLIError, match='not found'):
        resolve_checkpoint(tmp_path / 'missing')


def test_format_table():
    # 3000 samples per set: 2976 right, edit distances, confidences and predicted lengths giving the row below.
    result = BatchResult(num_samples=3000, correct=2976, ned=11.7, confidence=2913.69, label_length=15240)
    sets = {'IIIT5k': SetResult(result), 'IC13_1015': SetResult(BatchResult(**vars(result)))}
    evaluation = Evaluation({'Benchmark': ['IIIT5k', 'IC13_1015']}, sets)
    got = evaluation.table('Benchmark')
    assert got.splitlines() == [
        '| Dataset   | # samples | Accuracy | 1 - NED | Confidence | Label Length |',
        '|:---------:|----------:|---------:|--------:|-----------:|-------------:|',
        '| IIIT5k    |      3000 |    99.20 |   99.61 |      97.12 |         5.08 |',
        '| IC13_1015 |      3000 |    99.20 |   99.61 |      97.12 |         5.08 |',
        '|-----------|-----------|----------|---------|------------|--------------|',
        '| Combined  |      6000 |    99.20 |   99.61 |      97.12 |         5.08 |',
    ]


# --- Unreadable records and output files -----------------------------------------------------------------------------


def _argv(ckpt: Path, root: Path) -> list:
    return [str(ckpt), '--data_root', str(root), '--device', 'cpu', '--num_workers', '0', '--batch_size', str(BATCH)]


@pytest.fixture(scope='module')
def corrupt_data(tmp_path_factory, fixture_images):
    """IIIT5k: 40 records, 38 of them garbage bytes (the issue's case); SVT: a 0-byte and a truncated PNG between two
    good images; AllBad: nothing readable. Good images are labelled with the model's own prediction (100%)."""
    root = tmp_path_factory.mktemp('corrupt')
    good = {'IIIT5k': [fixture_images[0], fixture_images[1]], 'SVT': [fixture_images[2], fixture_images[3]]}
    preds = {s: predict(images) for s, images in good.items()}
    labels = {s: [p for p, _ in preds[s]] for s in good}
    iiit = [(b'garbage %d' % i, f'word{i}') for i in range(1, 41)]
    iiit[16], iiit[39] = zip(good['IIIT5k'], labels['IIIT5k'])  # records 17 and 40
    write_lmdb(root / 'test' / 'IIIT5k', iiit)
    truncated = fixture_images[1][: len(fixture_images[1]) // 2]  # the PNG header is intact
    (a, b), (la, lb) = good['SVT'], labels['SVT']
    write_lmdb(root / 'test' / 'SVT', [(a, la), (b'', 'empty'), (truncated, 'truncated'), (b, lb)])
    write_lmdb(root / 'test' / 'AllBad', [(b'', 'a'), (b'\x89PNG\r\n', 'b')])
    return root, labels, preds


def test_tool_excludes_unreadable_records(tmp_path, corrupt_data, capsys):
    """A bad record is neither scored nor counted (it used to be replaced by the next readable sample: "40 samples,
    100.00%"); the skipped records are listed under the table, in the log, the JSON and the CSV."""
    root, labels, preds = corrupt_data
    ckpt = _link(FIXTURE_CKPT, tmp_path / 'clip4str_tiny.ckpt')
    out_json, out_csv = tmp_path / 'r.json', tmp_path / 'r.csv'
    tool = load_tool('test')
    assert tool.main(_argv(ckpt, root) + ['--out', str(out_json), '--out', str(out_csv)]) == 0
    stdout = capsys.readouterr().out

    want = {s: expected_metrics(preds[s], labels[s]) for s in ('IIIT5k', 'SVT')}
    assert want['IIIT5k']['num_samples'] == 2 and want['IIIT5k']['accuracy'] == want['SVT']['accuracy'] == 100
    bad_iiit = [f'image-{i:09d}' for i in range(1, 41) if i not in (17, 40)]
    listed = ', '.join(f'{k} (cannot identify image file)' for k in bad_iiit[:10])
    bench = table([(s, want[s]) for s in want], combine(list(want.values())))
    empty = expected_metrics([], [])
    report = '\n'.join(
        [
            'Benchmark set:',
            *bench,
            f'Skipped 38 unreadable record(s) of IIIT5k (2 evaluated): {listed} and 28 more',
            'Skipped 2 unreadable record(s) of SVT (2 evaluated): image-000000002 (image is empty (0 bytes)), '
            'image-000000003 (image file is truncated)',
            '',
            '',
            'Other set:',
            *table([('AllBad', empty)], empty),
            'Skipped 2 unreadable record(s) of AllBad (0 evaluated): image-000000001 (image is empty (0 bytes)), '
            'image-000000002 (cannot identify image file)',
            '',
            '',
            'Time:',
        ]
    )
    assert report in stdout
    assert '| IIIT5k   |         2 |   100.00 |' in stdout and '| AllBad   |         0 |      nan |' in stdout
    assert re.search(r'Total samples 4\.$', stdout, re.M)
    log = (tmp_path / 'clip4str_tiny.ckpt.log_newFalse.txt').read_text()
    assert report in log

    doc = json.loads(out_json.read_text())
    sets = doc['sets']
    for s in want:
        _check_metrics(sets[s], want[s])
    assert sets['IIIT5k']['num_skipped'] == 38
    assert sets['IIIT5k']['skipped_records'] == [dict(key=k, reason='cannot identify image file') for k in bad_iiit]
    assert sets['SVT']['skipped_records'] == [
        dict(key='image-000000002', reason='image is empty (0 bytes)'),
        dict(key='image-000000003', reason='image file is truncated'),
    ]
    _check_metrics(sets['AllBad'], empty)
    assert sets['AllBad']['num_skipped'] == 2
    combined = doc['groups']['Benchmark']['combined']
    assert combined['num_samples'] == 4 and combined['num_skipped'] == 40 and doc['time']['total_samples'] == 4
    with open(out_csv, newline='') as f:
        rows = {(r['group'], r['dataset']): r for r in csv.DictReader(f)}
    assert rows['Benchmark', 'IIIT5k']['num_samples'] == '2' and rows['Benchmark', 'IIIT5k']['num_skipped'] == '38'
    assert rows['Benchmark', 'SVT']['num_skipped'] == '2'
    assert rows['Benchmark', 'Combined']['num_samples'] == '4' and rows['Benchmark', 'Combined']['num_skipped'] == '40'
    assert rows['Other', 'AllBad']['num_samples'] == '0' and rows['Other', 'AllBad']['accuracy'] == 'nan'


def test_tool_bad_out_fails_before_loading(tmp_path, corrupt_data, monkeypatch):
    """Every --out is checked before the model or any data is loaded; the error names the path."""
    root = corrupt_data[0]
    tool = load_tool('test')

    def no_load(*args, **kwargs):
        raise AssertionError('the model was loaded before --out was checked')

    monkeypatch.setattr(tool, 'load_model', no_load)
    (tmp_path / 'file.txt').write_text('')
    (tmp_path / 'dir.json').mkdir()
    good = tmp_path / 'good.json'
    for bad, why in [(tmp_path / 'dir.json', 'is a directory'), (tmp_path / 'file.txt' / 'r.csv', 'not a directory')]:
        with pytest.raises(CLIError, match=re.escape(f'--out {bad}: ') + f'.*{why}'):
            tool.main(_argv(FIXTURE_CKPT, root) + ['--out', str(good), '--out', str(bad)])
    assert not good.exists()
    proc = subprocess.run(
        [sys.executable, 'tools/test.py', *_argv(FIXTURE_CKPT, root), '--out', str(tmp_path / 'dir.json')],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=ENV,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f'test.py: error: --out {tmp_path / "dir.json"}: is a directory']


def test_tool_one_failed_out_keeps_the_others(tmp_path, corrupt_data, monkeypatch):
    """An output that fails when written does not cost the others; missing directories are created."""
    root = corrupt_data[0]
    tool = load_tool('test')

    write = Evaluation.write

    def disk_full_for_csv(self, path, *args):
        if str(path).endswith('.csv'):
            raise OSError('No space left on device')
        write(self, path, *args)

    monkeypatch.setattr(Evaluation, 'write', disk_full_for_csv)
    out_csv, out_json = tmp_path / 'r.csv', tmp_path / 'new' / 'dir' / 'r.json'
    ckpt = _link(FIXTURE_CKPT, tmp_path / 'clip4str_tiny.ckpt')  # the log is written next to the checkpoint
    with pytest.raises(CLIError, match=re.escape(f'cannot write {out_csv} (No space left on device)')):
        tool.main(_argv(ckpt, root) + ['--std', '--out', str(out_csv), '--out', str(out_json)])
    assert json.loads(out_json.read_text())['sets']['IIIT5k']['num_samples'] == 2
