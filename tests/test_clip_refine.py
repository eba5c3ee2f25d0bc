"""CLIP post-refinement (``tools/test.py --clip_refine``, ``strhub.models.clip4str.clip_refine``) on the tiny fixture
model: random weights, so its per-character distributions are flat and every image has several candidates."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from strhub.data.lmdb_io import write_lmdb
from strhub.evaluation import evaluate
from strhub.models import load_from_checkpoint
from strhub.models.clip4str.clip_refine import (
    ClipRefineError,
    ClipRefineOptions,
    clip_refine,
    sample_candidates,
    truncated_distribution,
)
from _cli import run_cli
from helpers import FIXTURES, FIXTURE_CKPT, FIXTURE_IMAGES, REPO, load_tool, require_fixtures

ENV = {**os.environ, 'OMP_NUM_THREADS': '1'}


@pytest.fixture(scope='module')
def model():
    require_fixtures([])
    return load_from_checkpoint(FIXTURE_CKPT).eval()


@pytest.fixture(scope='module')
def batch(model):
    """The fixture images as the original's test transform gives them, and the model's logits for them."""
    images = torch.load(FIXTURES / 'inputs.pt')['images']
    with torch.inference_mode():
        return images, model(images)


@pytest.fixture(scope='module')
def data_root(tmp_path_factory, model, batch):
    """An IIIT5k LMDB of the four images: two labelled with the model's own reading, two with the rendered word."""
    preds, _ = model.decode_logits(batch[1])
    labels = [model.charset_adapter(preds[0]), 'clip4str', model.charset_adapter(preds[2]), '2024ab']
    root = tmp_path_factory.mktemp('data')
    write_lmdb(root / 'test' / 'IIIT5k', [((FIXTURES / n).read_bytes(), y) for n, y in zip(FIXTURE_IMAGES, labels)])
    return root


def refine(model, batch, seed: int = 0, **options):
    with torch.inference_mode():
        return clip_refine(model, *batch, ClipRefineOptions(**options), torch.Generator().manual_seed(seed))


def test_readings_are_candidates_and_reproducible(model, batch):
    options = dict(k=3, k2=4, num_samples=20, alpha=1.0)
    preds, confidences = refine(model, batch, **options)
    assert (preds, confidences) == refine(model, batch, **options)
    assert any(refine(model, batch, seed, **options)[0] != preds for seed in range(1, 4))

    # The draws again, image after image from the same seed: each reading is one of them or the greedy one.
    generator = torch.Generator().manual_seed(0)
    changed = 0
    for dist, pred, confidence in zip(batch[1].softmax(-1), preds, confidences):
        dist = truncated_distribution(dist, model.tokenizer.eos_id)
        assert dist[:, model.tokenizer.eos_id].eq(0).all()
        ids, probs = sample_candidates(dist, 3, 4, 20, generator)
        assert 1 < len(ids) <= 3 and (probs.prod(1).diff() <= 0).all()  # distinct, most probable first
        greedy = dist.argmax(-1)
        readings = {model.charset_adapter(model.tokenizer.ids_to_str(r)): p.prod().item() for r, p in zip(ids, probs)}
        readings.setdefault(model.charset_adapter(model.tokenizer.ids_to_str(greedy)), dist.max(-1)[0].prod().item())
        assert pred in readings and confidence == pytest.approx(readings[pred], rel=1e-6)
        changed += pred != model.charset_adapter(model.tokenizer.ids_to_str(greedy))
    assert changed  # CLIP chose another reading somewhere


def test_one_candidate_is_the_greedy_reading(model, batch):
    """Drawing each character among its single most probable class leaves the greedy reading alone: the plain
    prediction, with the confidence of its characters only (the original leaves the [E] probability out)."""
    preds, confidences = refine(model, batch, k2=1, alpha=10.0)
    plain, probs = model.tokenizer.decode(batch[1].softmax(-1))
    assert preds == [model.charset_adapter(p) for p in plain]
    assert confidences == pytest.approx([p[:-1].prod().item() for p in probs], rel=1e-6)


def test_probable_readings_and_edge_cases(model, batch):
    """Peaked distributions, as a trained model gives: with alpha=0 the most probable reading wins; an image whose
    first step is [E] reads '' (confidence 1), one that never ends reads every step; too long a prompt is an error."""
    images = batch[0][:3]
    ids = torch.tensor([[3, 4, 5, 0, 6], [0, 7, 7, 7, 7], [8, 9, 10, 11, 12]])
    logits = torch.full((3, 5, batch[1].shape[-1]), -4.0).scatter(2, ids[..., None], 4.0)
    generator = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        preds, confidences = clip_refine(model, images, logits, ClipRefineOptions(alpha=0), generator)
    assert preds == ['234', '', '789ab'] and confidences[1] == 1.0
    with pytest.raises(ClipRefineError, match='longer than the 77 tokens'):
        refine(model, batch, prompt='many words ' * 40)
    for bad in (dict(k=0), dict(num_samples=0), dict(alpha=float('nan'))):
        with pytest.raises(ClipRefineError):
            ClipRefineOptions(**bad)


def test_evaluate(model, data_root):
    def metrics(**kw):
        result = evaluate(model, data_root, ['IIIT5k'], 4, 0, 'cpu', progress=False, **kw).sets['IIIT5k'].result
        return result.correct, result.ned, result.label_length, result.confidence

    plain = metrics()
    assert plain[0] == 2
    assert metrics(clip_refine=ClipRefineOptions(k2=1))[:3] == plain[:3]
    refined = metrics(clip_refine=ClipRefineOptions(alpha=1.0))
    assert refined == metrics(clip_refine=ClipRefineOptions(alpha=1.0)) and refined[:3] != plain[:3]


def _argv(ckpt: Path, root: Path) -> list:
    return [str(ckpt), '--data_root', str(root), '--device', 'cpu', '--num_workers', '0', '--batch_size', '4']


def test_tool_end_to_end(tmp_path, model, data_root):
    ckpt = tmp_path / 'clip4str_tiny.ckpt'
    ckpt.symlink_to(FIXTURE_CKPT)
    out = tmp_path / 'r.json'
    flags = ['--clip_refine', '--sample-K', '3', '--sample_K2', '0', '--sample_prompt', 'a photo of', '--alpha', '2']
    proc = subprocess.run(
        [sys.executable, 'tools/test.py', *_argv(ckpt, data_root), *flags, '--out', str(out)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=ENV,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    log = tmp_path / 'clip4str_tiny.ckpt.log_K0-3-50_prompta photo of_alpha2.0_newFalse.txt'
    assert log.is_file() and 'Benchmark set:' in log.read_text()
    doc = json.loads(out.read_text())
    options = ClipRefineOptions(k=3, k2=0, prompt='a photo of', alpha=2.0)
    assert doc['clip_refine'] == dict(k=3, k2=0, num_samples=50, prompt='a photo of', alpha=2.0, seed=0)
    want = evaluate(model, data_root, ['IIIT5k'], 4, 0, 'cpu', progress=False, clip_refine=options).sets['IIIT5k']
    got = doc['sets']['IIIT5k']
    assert got['accuracy'] == want.metrics()['accuracy'] and got['label_length'] == want.metrics()['label_length']
    assert got['confidence'] == pytest.approx(want.metrics()['confidence'], rel=1e-5)


def test_tool_off_by_default(tmp_path, data_root, capsys):
    ckpt = tmp_path / 'clip4str_tiny.ckpt'
    ckpt.symlink_to(FIXTURE_CKPT)
    assert load_tool('test').main(_argv(ckpt, data_root) + ['--out', str(tmp_path / 'r.json')]) == 0
    assert [p.name for p in tmp_path.glob('*.txt')] == ['clip4str_tiny.ckpt.log_newFalse.txt']
    doc = json.loads((tmp_path / 'r.json').read_text())
    assert 'clip_refine' not in doc and doc['sets']['IIIT5k']['accuracy'] == 50


@pytest.mark.parametrize(
    'flags, message',
    [
        (['--sample_K', '0'], '--sample_K must be >= 1 (got 0)'),
        (['--sample_total', '-1'], '--sample_total must be >= 1 (got -1)'),
        (['--alpha', 'inf'], '--alpha must be a finite number (got inf)'),
        (['--sample_prompt', 'many words ' * 40], 'longer than the 77 tokens CLIP reads: shorten the prompt'),
    ],
)
def test_tool_bad_values(tmp_path, data_root, capsys, flags, message):
    with pytest.raises(SystemExit) as e:
        run_cli(load_tool('test').main, _argv(FIXTURE_CKPT, data_root) + ['--clip_refine', *flags], prog='test.py')
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert 'Traceback' not in err
    lines = err.strip().splitlines()
    if '--sample_prompt' in flags:  # found on the first batch, under its progress bar
        lines = lines[-1:]
    assert len(lines) == 1 and lines[0].startswith('test.py: error: ') and lines[0].endswith(message)
