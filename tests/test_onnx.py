"""ONNX export (``tools/export.py --format onnx``, ``strhub.deploy``) against PyTorch: the logits, strings and
confidences of onnxruntime equal the checkpoint's, for each decoding mode, at any batch size from one export."""

import shutil
import sys
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from PIL import Image, ImageDraw

pytest.importorskip('onnx')
pytest.importorskip('onnxruntime')

from helpers import FIXTURES, FIXTURE_IMAGES, SMALL_MODEL, load_tool  # noqa: E402
from _cli import CLIError  # noqa: E402

from strhub.deploy import OnnxModelError  # noqa: E402
from strhub.deploy.onnx_export import export_onnx  # noqa: E402
from strhub.deploy.onnx_runtime import OnnxRecognizer  # noqa: E402
from strhub.models import load_from_checkpoint  # noqa: E402
from strhub.read import TextReader  # noqa: E402

LOGIT_ATOL = 1e-4
CONFIDENCE_ATOL = 1e-5
# Short and long words beside the fixture's, so that autoregressive decoding stops early at some batch sizes and not
# at others.
WORDS = ['a', 'go', 'onnxruntime']
# (source, overrides at export): the shipped model, the original's checkpoint, random models of 2 decoder layers.
MODELS = {
    'tiny': ('clip4str-tiny', {}),
    'tiny_nar': ('clip4str-tiny', {'decode_ar': False}),
    'tiny_r0': ('clip4str-tiny', {'refine_iters': 0}),
    'fixture': (FIXTURES / 'clip4str_tiny.ckpt', {}),
    'fixture_nar': (FIXTURES / 'clip4str_tiny.ckpt', {'decode_ar': False}),
    'depth2_r2': (None, {'refine_iters': 2}),
    'visual_only': (None, {'use_language_model': False}),
    'visual_only_r0': (None, {'use_language_model': False, 'refine_iters': 0}),
}


def _render(word: str) -> Image.Image:
    img = Image.new('RGB', (16 + 9 * len(word), 32), (255, 255, 255))
    ImageDraw.Draw(img).text((8, 10), word, fill=(0, 0, 0))
    return img


@pytest.fixture(scope='module')
def pictures(tmp_path_factory) -> Path:
    """The fixture's word images and a few rendered ones, in one folder."""
    folder = tmp_path_factory.mktemp('images')
    for name in FIXTURE_IMAGES:
        shutil.copy(FIXTURES / name, folder / name)
    for i, word in enumerate(WORDS):
        _render(word).save(folder / f'word{i}.png')
    return folder


def _small(compose_config, overrides):
    """A random model of 2 decoder layers with decisive argmax margins, so that strings have varied lengths."""
    torch.manual_seed(0)
    flags = [f'model.{k}={str(v).lower()}' for k, v in overrides.items()]
    config = compose_config([*SMALL_MODEL, 'model.dec_depth=2', 'model.charset_train=abcdefghij', *flags])
    system = instantiate(config.model)
    with torch.no_grad():
        for decoder in (system.model.visual_decoder, system.model.cross_decoder):
            if decoder is not None:
                decoder.head.weight.mul_(40)
                decoder.pos_queries.mul_(20)
    return system.eval()


@pytest.mark.parametrize('name', list(MODELS))
def test_onnxruntime_equals_pytorch(name, compose_config, pictures, tmp_path):
    source, overrides = MODELS[name]
    if source is None:
        system = _small(compose_config, overrides)
    else:
        system = load_from_checkpoint(source, **overrides)
    files = export_onnx(system, tmp_path / 'model.onnx')
    cross = ['model.text.onnx', 'model.cross.onnx'] if system.model.cross_decoder else []
    assert [f.name for f in files] == ['model.onnx', 'model.visual.onnx', *cross]
    recognizer = OnnxRecognizer(files[0])
    assert recognizer.config['refine_iters'] == system.model.refine_iters
    if source is None:
        images = torch.randn(7, 3, 32, 128, generator=torch.Generator().manual_seed(1))
    else:
        reader = TextReader(system, device='cpu')
        images = torch.stack([reader.preprocess(p) for p in sorted(pictures.iterdir())])
    lengths = set()
    for batch in (images, images[:1], images[4:5], images[1:4]):  # one export, batch sizes 7, 1 and 3
        with torch.no_grad():
            expected = system.model.forward_branches(batch)
        got = recognizer.forward_branches(batch)
        for e, g in zip(expected, got):
            assert e.shape == g.shape
            assert (e - g).abs().max() < LOGIT_ATOL
        texts, confidences = system.decode_logits(expected[1])
        onnx_texts, onnx_confidences = recognizer.decode_logits(got[1])
        assert onnx_texts == texts
        assert onnx_confidences == pytest.approx(confidences, rel=0, abs=CONFIDENCE_ATOL)
        lengths.add(expected[0].shape[1])
    if name == 'tiny_r0':  # early stops at several lengths, shorter than the exported T positions
        assert len(lengths) > 1 and max(lengths) < system.model.max_label_length + 1, lengths


def test_cli_export_then_read(pictures, tmp_path, capsys):
    export, read = load_tool('export'), load_tool('read')
    # The output's format from its suffix, DST or --output.
    assert export.main(['clip4str-tiny', str(tmp_path / 'tiny.ckpt')]) == 0
    assert export.main(['clip4str-tiny', '--output', str(tmp_path / 'tiny.onnx')]) == 0
    onnx_files = ['tiny.cross.onnx', 'tiny.onnx', 'tiny.text.onnx', 'tiny.visual.onnx']
    assert sorted(p.name for p in tmp_path.iterdir()) == ['tiny.ckpt', *onnx_files]
    capsys.readouterr()
    lines = []
    for model in ('clip4str-tiny', tmp_path / 'tiny.ckpt', tmp_path / 'tiny.onnx'):
        assert read.main([str(model), str(pictures), '--batch_size', '3']) == 0
        lines.append(capsys.readouterr().out.splitlines())
    assert len(lines[0]) == len(FIXTURE_IMAGES) + len(WORDS)
    assert lines[1] == lines[0] and lines[2] == lines[0]
    assert 'img2_Text.png: text (' in lines[2][2]  # case-insensitive charset

    # Options fixed at export, in a re-export: single-pass decoding.
    assert export.main(['clip4str-tiny', str(tmp_path / 'nar.onnx'), '--decode', 'nar']) == 0
    assert OnnxRecognizer(tmp_path / 'nar.onnx').config['decode_ar'] is False


@pytest.fixture(scope='module')
def exported(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp('onnx') / 'tiny.onnx'
    export_onnx(load_from_checkpoint('clip4str-tiny'), path)
    return path


def test_options_fixed_at_export_are_refused(exported, pictures):
    for kwargs in ({'refine_iters': 0}, {'decode_ar': False}, {'charset_test': 'abc'}):
        with pytest.raises(OnnxModelError, match=f'{next(iter(kwargs))}: fixed when the ONNX model .* re-export'):
            TextReader(exported, **kwargs)
    with pytest.raises(OnnxModelError, match='precision bf16-mixed: the ONNX model .* runs in float32'):
        TextReader(exported, precision='bf16-mixed')
    read = load_tool('read')
    for flags in (['--refine_iters', '0'], ['--decode', 'nar'], ['decode_ar:bool=false']):
        with pytest.raises(CLIError, match='fixed when the ONNX model .*tiny.onnx was exported'):
            read.main([str(exported), str(pictures), *flags])


def test_bad_export_arguments(tmp_path, capsys):
    export = load_tool('export')
    with pytest.raises(SystemExit) as e:
        export.main(['clip4str-tiny', str(tmp_path / 'x.onnx'), '--format', 'tflite'])
    assert e.value.code == 2 and "invalid choice: 'tflite'" in capsys.readouterr().err
    cases = {
        'cannot tell the format from .*x.bin': [str(tmp_path / 'x.bin')],
        'an ONNX export is named NAME.onnx': [str(tmp_path / 'x.bin'), '--format', 'onnx'],
        'two output files': [str(tmp_path / 'x.ckpt'), '--output', str(tmp_path / 'x.onnx')],
        'no output file': [],
        'model options and --opset are for --format onnx': [str(tmp_path / 'x.ckpt'), 'refine_iters:int=0'],
        '--fp32 is for --format ckpt': [str(tmp_path / 'x.onnx'), '--fp32'],
        '--opset must be 17 to 20': [str(tmp_path / 'x.onnx'), '--opset', '13'],
    }
    for message, args in cases.items():
        with pytest.raises(CLIError, match=message):
            export.main(['clip4str-tiny', *args])
    assert list(tmp_path.iterdir()) == []


def test_unusable_exports_are_reported(exported, tmp_path):
    alone = tmp_path / 'alone.onnx'
    shutil.copy(exported, alone)
    with pytest.raises(OnnxModelError, match=r'visual graph of .*alone\.onnx not found: .*tiny\.visual\.onnx'):
        OnnxRecognizer(alone)
    for role in ('visual', 'text'):
        shutil.copy(exported.with_name(f'tiny.{role}.onnx'), tmp_path)
    (tmp_path / 'tiny.cross.onnx').write_bytes(b'not the exported graph')
    with pytest.raises(
        OnnxModelError,
        match=r'tiny\.cross\.onnx is not the cross graph exported with .*tiny\.visual\.onnx, tiny\.text\.onnx',
    ):
        OnnxRecognizer(alone)
    corrupt = tmp_path / 'corrupt.onnx'
    corrupt.write_bytes(exported.read_bytes()[:1000])
    with pytest.raises(OnnxModelError, match=r'corrupt\.onnx is not a usable ONNX model'):
        TextReader(corrupt)
    import onnx

    foreign = tmp_path / 'foreign.onnx'
    proto = onnx.load(exported)
    del proto.metadata_props[:]
    onnx.save(proto, foreign)
    with pytest.raises(OnnxModelError, match=r'foreign\.onnx is an ONNX model but not a strhub export'):
        OnnxRecognizer(foreign)
    with pytest.raises(OnnxModelError, match='ONNX model not found'):
        OnnxRecognizer(tmp_path / 'missing.onnx')


def test_onnxruntime_missing(exported, pictures, monkeypatch):
    monkeypatch.setitem(sys.modules, 'onnxruntime', None)  # import onnxruntime raises ImportError
    with pytest.raises(ImportError, match=r"reading \.onnx models needs onnxruntime: pip install -e '\.\[onnx\]'"):
        TextReader(exported)
    with pytest.raises(CLIError, match=r"needs onnxruntime: pip install -e '\.\[onnx\]'"):
        load_tool('read').main([str(exported), str(pictures)])
