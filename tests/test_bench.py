"""tools/bench.py in its smoke mode: the tiny config, one timed run, every section present (no timing asserts)."""

import json
import sys

import pytest

from _cli import CLIError
from helpers import load_tool

bench = load_tool('bench')


def test_bench_smoke(tmp_path, capsys):
    out = tmp_path / 'bench.json'
    args = ['--batch_size', '2', '--warmup', '0', '--repeats', '1', '--lengths', '3', '--reference', '--out', str(out)]
    assert bench.main(args) == 0
    result = json.loads(out.read_text())
    assert [c['mode'] for c in result['inference']['cases']] == ['ar_refine', 'ar', 'nar']
    for case in result['inference']['cases']:
        assert case['steps'] == 4
        for kind in ('ours', 'reference'):
            assert case[kind]['median'] > 0 and case[kind]['min'] <= case[kind]['max']
            assert case[kind]['gflops'] > 0
    # The cached AR decoder does less arithmetic than re-running the prefix and re-projecting the memory.
    ar = result['inference']['cases'][1]
    assert ar['ours']['gflops'] < ar['reference']['gflops']
    assert set(result['inference']['stages']) >= {'image encoder', 'visual decoder', 'cross-modal decoder'}
    train = result['training']
    assert train['ours']['forward'] > 0 and train['reference']['backward'] > 0
    p = result['params']
    assert p['total'] == p['trainable'] + p['frozen'] and p['frozen'] > 0
    screen = capsys.readouterr().out
    assert '| AR + refine | 4 |' in screen and 'speed-up of the training step' in screen


def test_bench_rejects_unknown_experiment(capsys):
    from _cli import CLIError

    try:
        bench.main(['--experiment', 'clip4str-nope'])
    except CLIError as e:
        assert 'clip4str-tiny' in str(e)
    else:
        raise AssertionError('an unknown experiment must be an error')


def test_bench_read_smoke(tmp_path, capsys):
    bench_read = load_tool('bench_read')
    pytest.importorskip('onnxruntime')
    onnx = tmp_path / 'tiny.onnx'
    from strhub.deploy.onnx_export import export_onnx
    from strhub.models import load_from_checkpoint

    export_onnx(load_from_checkpoint('clip4str-tiny'), onnx)
    out = tmp_path / 'read.json'
    args = ['clip4str-tiny', str(onnx), '--count', '6', '--warmup', '1', '--batch_size', '4', '--out', str(out)]
    assert bench_read.main(args) == 0
    result = json.loads(out.read_text())
    pytorch, ort = result['results']
    assert (pytorch['backend'], ort['backend']) == ('PyTorch', 'onnxruntime')
    assert len(pytorch['texts']) == 6 and ort['texts'] == pytorch['texts']
    for r in (pytorch, ort):
        assert 0 < r['median_ms'] <= r['p90_ms'] and r['images_s'] > 0
        assert r['accuracy'] >= 0.5  # the shipped model reads held-out rendered words
    assert '| clip4str-tiny | PyTorch |' in capsys.readouterr().out


def test_bench_read_second_look_on_scene_sets(tmp_path, capsys):
    bench_read = load_tool('bench_read')
    out = tmp_path / 'read.json'
    args = ['clip4str-tiny', '--second_look', '--sets', 'SynthScene/loose', '--count', '6', '--warmup', '1']
    assert bench_read.main(args + ['--batch_size', '4', '--out', str(out)]) == 0
    once, looked = json.loads(out.read_text())['results']
    assert (once['reader'], looked['reader']) == ('clip4str-tiny', 'clip4str-tiny + second look')
    assert len(looked['texts']) == 6 and looked['median_ms'] > 0
    assert 'SynthScene/loose' in capsys.readouterr().out
    with pytest.raises(CLIError, match='--sets'):
        bench_read.main(['clip4str-tiny', '--sets', 'Nope', '--count', '2'])


def test_bench_read_reports_a_broken_rapidocr():
    from _cli import CLIError

    bench_read = load_tool('bench_read')
    # This interpreter has no rapidocr: the error names the interpreter and the reason, not a traceback.
    with pytest.raises(CLIError, match=r"--rapidocr .* failed: ModuleNotFoundError: No module named 'rapidocr'"):
        bench_read.main(['--rapidocr', sys.executable, '--count', '2'])
    with pytest.raises(CLIError, match='nothing to time'):
        bench_read.main([])


FAKE_RAPIDOCR = """
from types import SimpleNamespace
from PIL import Image

class RapidOCR:
    def __init__(self, params=None):
        pass

    def __call__(self, path, use_det=True, use_cls=True, use_rec=True):
        assert (use_det, use_cls, use_rec) == (False, False, True)  # the recogniser alone
        if Image.open(path).convert('RGB').getpixel((0, 0))[0] % 2:  # the odd records: nothing read
            return SimpleNamespace(txts=None, scores=None)
        return SimpleNamespace(txts=('Hel', 'lo!'), scores=(0.9, 0.7))
"""


def test_test_rapidocr_scores_like_test_py(make_lmdb, tmp_path, monkeypatch, capsys):
    from _cli import CLIError

    # A stand-in rapidocr (an importable package with its distribution metadata) in a fresh interpreter.
    fake = tmp_path / 'fake'
    (fake / 'rapidocr').mkdir(parents=True)
    (fake / 'rapidocr' / '__init__.py').write_text(FAKE_RAPIDOCR)
    (fake / 'rapidocr-3.10.0.dist-info').mkdir()
    (fake / 'rapidocr-3.10.0.dist-info' / 'METADATA').write_text(
        'Metadata-Version: 2.1\nName: rapidocr\nVersion: 3.10.0\n'
    )
    monkeypatch.setenv('PYTHONPATH', str(fake))
    # Records 0 and 2 read 'Hello!' (-> 'hello' on the test charset), record 1 nothing; the 4th is no image.
    make_lmdb('data/test/SetA', ['HELLO', 'hello', 'world', (b'not an image', 'x')])
    make_lmdb('data/test/SetB', ['hello-'])
    out = tmp_path / 'rapidocr.json'
    tool = load_tool('test_rapidocr')
    assert tool.main([sys.executable, '--data_root', str(tmp_path / 'data'), '--out', str(out)]) == 0
    report = capsys.readouterr().out
    assert 'rapidocr 3.10.0' in report and 'Test set IIIT5k not found' in report
    sets = json.loads(out.read_text())['sets']
    assert sets['SetA']['num_samples'] == 3 and sets['SetA']['num_skipped'] == 1
    assert sets['SetA']['accuracy'] == pytest.approx(100 / 3)
    assert sets['SetA']['confidence'] == pytest.approx(100 * 1.6 / 3)  # its mean line score; 0 when nothing read
    assert sets['SetB']['accuracy'] == 100  # the label's '-' is outside the test charset, as in tools/test.py
    with pytest.raises(CLIError, match="failed: ModuleNotFoundError: No module named 'rapidocr'"):
        monkeypatch.delenv('PYTHONPATH')
        tool.main([sys.executable, '--data_root', str(tmp_path / 'data'), '--sets', 'SetB'])
