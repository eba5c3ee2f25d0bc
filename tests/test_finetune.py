"""Fine-tuning the shipped tiny model on a script it has never seen (issue 19): scripts/finetune.sh extends its
lower-case Latin charset with upper case and Greek, trains a few steps on rendered Greek words, and the result is
tested and read with the new charset."""

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import lmdb
import pytest
import torch
from hydra.utils import instantiate
from PIL import Image

from helpers import FIXTURE_CKPT, REPO

from strhub.data.charsets import CHARSETS
from strhub.data.synthetic import make_dataset
from strhub.data.transforms import get_transform
from strhub.models import load_from_checkpoint
from strhub.models.averaging import average_checkpoints
from strhub.models.checkpoint import CheckpointError, export_checkpoint, model_state_dict, read_checkpoint
from strhub.pretrained import pretrained_path
from strhub.training import TrainingSetupError
from strhub.training.pretrained import fill_from_checkpoint, load_pretrained, read_pretrained

NEW = CHARSETS['125_latin-greek']
OLD = CHARSETS['36_lowercase']
GREEK = set('αβγδεζηθικλμνξοπρσςτυφχψωάέήίόύώΑΒΓΔΕΖΗΘΙΚΛΜΝΞΟΠΡΣΤΥΦΧΨΩΆΈΉΊΌΎΏ')
OVERRIDES = ['model.charset_train=${charset:125_latin-greek}']
ROWS = ('head.weight', 'head.bias', 'text_embed.embedding.weight')


@pytest.fixture(scope='module')
def greek_root(tmp_path_factory) -> Path:
    """Rendered Greek words (and random strings of the whole new charset), the held-out words in test/."""
    root = tmp_path_factory.mktemp('greek')
    words = [REPO / 'strhub' / 'data' / 'wordlist_el.txt']
    make_dataset(root, 2048, 64, 32, charset=NEW, seed=0, workers=2, progress=False, words=words)
    return root


def _test_batch(root: Path, n: int = 32):
    env = lmdb.open(str(root / 'test' / 'SynthWords'), readonly=True, lock=False)
    transform = get_transform((32, 128))
    with env.begin() as txn:
        samples = [(txn.get(b'image-%09d' % i), txn.get(b'label-%09d' % i).decode()) for i in range(1, n + 1)]
    env.close()
    images = [Image.open(io.BytesIO(data)).convert('RGB') for data, _ in samples]
    return images, torch.stack([transform(im) for im in images]), [label for _, label in samples]


def _loss(model, images, labels) -> float:
    """The training loss of both branches in the canonical order (no random permutations): comparable across models."""
    perms = torch.arange(max(map(len, labels)) + 2)[None]
    with torch.no_grad():
        return model.eval().training_loss(images, labels, perms).item()


def test_finetune_tiny_on_greek(greek_root, tmp_path, compose_config):
    config = compose_config(['+experiment=finetune', 'pretrained=clip4str-tiny', *OVERRIDES])
    pretrained = read_pretrained(config)
    filled = fill_from_checkpoint(config, pretrained)
    # The shipped model's learning rate is its stage 2's: 1.5 x stage 1's 0.004
    # (configs/experiment/clip4str-tiny-scene)
    assert 'model.img_size=[32, 128]' in filled and "model.lr=0.003 (the checkpoint's x 0.5)" in filled
    # trained on 0.5/0.5 images (configs/experiment/clip4str-tiny*): fine-tuned on them too
    assert 'data.openai_meanstd=False (its training normalisation)' in filled and not config.data.openai_meanstd
    assert config.model.charset_train == NEW and config.model.charset_test == NEW  # scored on the new charset
    torch.manual_seed(0)
    model = instantiate(config.model)
    report = load_pretrained(model, pretrained)
    assert f'model.visual_decoder.head.weight: 36 characters copied, {len(NEW) - 36} added, 0 dropped' in report

    # (a) every old character's rows are carried over exactly, wherever it now sits
    old = model_state_dict(read_checkpoint(pretrained_path('clip4str-tiny')), 'clip4str-tiny')
    own = model.state_dict()
    for decoder in ('visual_decoder', 'cross_decoder'):
        for name in ROWS:
            key = f'model.{decoder}.{name}'
            for j, c in enumerate(OLD, 1):  # id 0 is [E]
                assert torch.equal(own[key][NEW.index(c) + 1], old[key][j].float()), (key, c)

    images, batch, labels = _test_batch(greek_root)
    assert sum(any(c in GREEK for c in y) for y in labels) >= 24  # the held-out words are Greek
    loss_before = _loss(model, batch, labels)

    run = tmp_path / 'run'
    proc = subprocess.run(
        [
            'bash',
            str(REPO / 'scripts' / 'finetune.sh'),
            'clip4str-tiny',
            str(greek_root),
            *OVERRIDES,
            'trainer.max_steps=80',
            'trainer.val_check_interval=40',
            'trainer.num_sanity_val_steps=0',
            'model.batch_size=32',
            'data.num_workers=0',
            f'hydra.run.dir={run}',
        ],
        env={**os.environ, 'PYTHON': sys.executable, 'PYTHONWARNINGS': 'ignore'},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f'36 characters copied, {len(NEW) - 36} added, 0 dropped' in proc.stdout
    ckpt = run / 'checkpoints' / 'last.ckpt'
    assert read_checkpoint(ckpt)['openai_meanstd'] is False  # recorded for the next fine-tuning

    # (b) the loss on held-out Greek words falls
    tuned = load_from_checkpoint(ckpt)
    assert tuned.hparams.charset_train == NEW
    loss_after = _loss(tuned, batch, labels)
    assert loss_after < 0.7 * loss_before, (loss_before, loss_after)

    # (c) test.py scores on the new charset; read.py prints Greek
    out = tmp_path / 'results.json'
    proc = subprocess.run(
        [sys.executable, str(REPO / 'tools' / 'test.py'), str(ckpt), '--data_root', str(greek_root)]
        + ['--charset_test', 'train', '--num_workers', '0', '--device', 'cpu', '--out', str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Test charset: the checkpoint's training charset (125 characters)" in proc.stdout
    results = json.loads(out.read_text())
    assert results['charset_test'] == NEW and results['sets']['SynthWords']['num_samples'] == 32
    folder = tmp_path / 'images'
    folder.mkdir()
    for i, image in enumerate(images[:16]):
        image.save(folder / f'{i:02d}.png')
    proc = subprocess.run(
        [sys.executable, str(REPO / 'tools' / 'read.py'), str(ckpt), str(folder), '--device', 'cpu'],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    texts = [line.split(': ', 1)[1].rsplit(' (', 1)[0] for line in proc.stdout.splitlines() if ': ' in line]
    assert len(texts) == 16
    assert sum(any(c in GREEK for c in t) for t in texts) >= 8, texts


@pytest.mark.parametrize('release', ['ckpt', 'pt'])
def test_finetune_from_an_original_release(release, tmp_path, compose_config):
    """The original's releases: its Lightning .ckpt (hyper-parameters naming a CLIP file that is not here) and the
    plain .pt state dicts without any: the network comes from the weights, and a new charset and label length map
    onto it."""
    if release == 'pt':
        path = tmp_path / 'clip4str_release.pt'
        torch.save(read_checkpoint(FIXTURE_CKPT)['state_dict'], path)
    else:
        path = FIXTURE_CKPT
    charset = CHARSETS['94_full'] + 'äöüßÄÖÜ'
    charset_file = tmp_path / 'charset.txt'  # a file: punctuation would need escaping on a Hydra command line
    charset_file.write_text(charset, encoding='utf-8')
    config = compose_config(
        ['+experiment=finetune', f'pretrained={path}', f'model.charset_train=${{charset:{charset_file}}}']
        + ['model.max_label_length=30', 'model.dropout=0.25']
    )
    pretrained = read_pretrained(config)
    filled = fill_from_checkpoint(config, pretrained)
    assert 'model.img_size=[224, 224]' in filled and "model.lr=4.2e-05 (the checkpoint's x 0.5)" in filled
    assert 'data.openai_meanstd=True (its training normalisation)' in filled  # not recorded: the original's default
    assert config.model.clip_arch['embed_dim'] == 32 and config.model.clip_arch['vision_layers'] == 2
    assert config.model.dropout == 0.25 and config.model.max_label_length == 30  # set on the command line: kept
    model = instantiate(config.model)
    report = load_pretrained(model, pretrained)
    assert 'model.visual_decoder.head.weight: 94 characters copied, 7 added, 0 dropped' in report
    assert 'model.cross_decoder.pos_queries: 26 positions copied, 5 added' in report
    with torch.no_grad():
        assert model.eval()(torch.rand(1, 3, 224, 224)).shape[-1] == len(charset) + 1


def test_fill_from_checkpoint_checks_the_scale(compose_config):
    config = compose_config(['+experiment=finetune', 'pretrained=clip4str-tiny', 'pretrained_lr_scale=abc'])
    with pytest.raises(TrainingSetupError, match="pretrained_lr_scale='abc' must be a positive number"):
        fill_from_checkpoint(config, read_pretrained(config))


def test_the_training_normalisation_travels_with_the_checkpoint(tmp_path, compose_config):
    """Exports and blends keep the record; the command line wins over it; a bad record is named."""
    out = export_checkpoint('clip4str-tiny', tmp_path / 'tiny.ckpt')
    assert read_checkpoint(out)['openai_meanstd'] is False
    blend = average_checkpoints([out, 'clip4str-tiny'], tmp_path / 'blend.ckpt')
    assert read_checkpoint(blend.path)['openai_meanstd'] is False and not blend.differing
    release = export_checkpoint(FIXTURE_CKPT, tmp_path / 'o.ckpt')
    assert read_checkpoint(release)['openai_meanstd'] is True

    config = compose_config(['+experiment=finetune', f'pretrained={out}', 'data.openai_meanstd=true'])
    filled = fill_from_checkpoint(config, read_pretrained(config))
    assert config.data.openai_meanstd is True and not any(f.startswith('data.') for f in filled)

    bad = read_checkpoint(out)
    bad['openai_meanstd'] = 'no'
    torch.save(bad, tmp_path / 'bad.ckpt')
    config = compose_config(['+experiment=finetune', f'pretrained={tmp_path / "bad.ckpt"}'])
    with pytest.raises(CheckpointError, match=r"bad.ckpt: 'openai_meanstd' must be true or false, got 'no'"):
        read_pretrained(config)
