"""tools/bench.py in its smoke mode: the tiny config, one timed run, every section present (no timing asserts)."""

import json
import sys

import pytest

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


def test_bench_read_reports_a_broken_rapidocr():
    from _cli import CLIError

    bench_read = load_tool('bench_read')
    # This interpreter has no rapidocr: the error names the interpreter and the reason, not a traceback.
    with pytest.raises(CLIError, match=r"--rapidocr .* failed: ModuleNotFoundError: No module named 'rapidocr'"):
        bench_read.main(['--rapidocr', sys.executable, '--count', '2'])
    with pytest.raises(CLIError, match='nothing to time'):
        bench_read.main([])
