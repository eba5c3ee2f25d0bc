"""SceneTextDataModule, transforms and the training RandAugment (spec §3.3-§3.6)."""

import pickle
import random

import numpy as np
import pytest
import torch
from PIL import Image

from strhub.data import augment
from strhub.data.module import SceneTextDataModule, seed_worker
from strhub.data.sampler import ResumableSampler
from strhub.data.test_sets import TEST_BENCHMARK, plan_test_sets
from strhub.data.transforms import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD, get_transform
from strhub.data.utils import CHARSETS

IMG_SIZE = (16, 32)


@pytest.fixture
def data_root(tmp_path, make_lmdb, png_bytes):
    """``root/{train/real/{A,B/sub},train/synth,val/{IC13,SVT},test/{IIIT5k,CUTE80}}``; all images pure red."""
    red = png_bytes(color=(255, 0, 0))
    make_lmdb('root/train/real/A', [(red, f'a{i}') for i in range(10)])
    make_lmdb('root/train/real/B/sub', [(red, f'b{i}') for i in range(7)] + [(red, 'Up!')])
    make_lmdb('root/train/synth', [(red, f's{i}') for i in range(3)])
    make_lmdb('root/val/IC13', [(red, 'Val1'), (red, 'val-2')])
    make_lmdb('root/val/SVT', [(red, 'v3')])
    make_lmdb('root/test/IIIT5k', [(red, 'Test'), (red, 't2'), (red, '###')])
    make_lmdb('root/test/CUTE80', [(red, 'c1')])
    return tmp_path / 'root'


def make_dm(root, **overrides):
    kwargs = dict(
        root_dir=root,
        train_dir='real',
        img_size=IMG_SIZE,
        max_label_length=25,
        charset_train=CHARSETS['94_full'],
        charset_test=CHARSETS['36_lowercase'],
        batch_size=4,
        num_workers=0,
        augment=False,
    )
    return SceneTextDataModule(**{**kwargs, **overrides})


def labels_of(loader):
    return [label for _, labels in loader for label in labels]


def test_train_batches(data_root):
    dm = make_dm(data_root)
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (4, 3, *IMG_SIZE) and images.dtype == torch.float32
    # default_collate turns the labels into a tuple of str (as in the original), the spec's "list of str".
    assert isinstance(labels, tuple) and all(isinstance(s, str) for s in labels)
    assert sorted(labels_of(dm.train_dataloader())) == sorted(
        [f'a{i}' for i in range(10)] + [f'b{i}' for i in range(7)] + ['Up!']
    )  # charset_train keeps case and punctuation


def test_several_train_dirs(data_root):
    dm = make_dm(data_root, train_dir=['real', 'synth'])
    assert len(dm.train_dataset) == 21


def test_val_and_test_use_charset_test(data_root):
    dm = make_dm(data_root)
    assert labels_of(dm.val_dataloader()) == ['val1', 'val2', 'v3']  # tree order, not shuffled
    loaders = dm.test_dataloaders(['CUTE80', 'IIIT5k'])
    assert list(loaders) == ['CUTE80', 'IIIT5k']
    assert labels_of(loaders['IIIT5k']) == ['test', 't2']  # '###' is empty after filtering
    assert not loaders['IIIT5k'].persistent_workers


def channel_values(loader):
    images, _ = next(iter(loader))
    return images.mean(dim=(0, 2, 3))  # a pure red image stays pure red after the bicubic resize


def test_normalisation_val_vs_test(data_root):
    red = torch.tensor([1.0, 0.0, 0.0])
    clip = (red - torch.tensor(OPENAI_DATASET_MEAN)) / torch.tensor(OPENAI_DATASET_STD)
    dm = make_dm(data_root)
    torch.testing.assert_close(channel_values(dm.val_dataloader()), clip, atol=1e-3, rtol=0)
    torch.testing.assert_close(channel_values(dm.train_dataloader()), clip, atol=1e-3, rtol=0)
    # The original's test.py normalises with 0.5/0.5 (spec §3.4 quirk).
    torch.testing.assert_close(
        channel_values(dm.test_dataloaders(['CUTE80'])['CUTE80']), red * 2 - 1, atol=1e-3, rtol=0
    )
    dm = make_dm(data_root, test_openai_meanstd=True)
    torch.testing.assert_close(channel_values(dm.test_dataloaders(['CUTE80'])['CUTE80']), clip, atol=1e-3, rtol=0)
    dm = make_dm(data_root, openai_meanstd=False)
    torch.testing.assert_close(channel_values(dm.val_dataloader()), red * 2 - 1, atol=1e-3, rtol=0)


def test_shuffle_is_deterministic(data_root):
    first = labels_of(make_dm(data_root, seed=3).train_dataloader())
    again = make_dm(data_root, seed=3).train_dataloader()
    assert labels_of(again) == first
    assert labels_of(again) == first  # the order is a function of (seed, epoch): Lightning sets the epoch
    again.sampler.set_epoch(1)
    assert labels_of(again) != first  # the next epoch is shuffled differently
    assert labels_of(make_dm(data_root, seed=4).train_dataloader()) != first


def test_augmentation_is_deterministic_with_workers(data_root):
    def run(seed):
        random.seed(seed * 10 + len(calls))  # the main process RNG state must not matter (forked workers inherit it)
        np.random.seed(seed * 10 + len(calls))
        calls.append(seed)
        loader = make_dm(data_root, seed=seed, augment=True, num_workers=2).train_dataloader()
        assert loader.persistent_workers
        return torch.cat([images for images, _ in loader])

    calls = []
    a, b = run(0), run(0)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, run(1))


def test_seed_worker_differs_per_worker_and_rank():
    def draws(worker_id, rank):
        torch.manual_seed(100 + worker_id)  # what the DataLoader does in each worker
        seed_worker(worker_id, rank)
        return random.random(), np.random.random(), torch.rand(()).item()

    assert draws(0, 0) == draws(0, 0)
    assert len({draws(0, 0), draws(1, 0), draws(0, 1)}) == 3


def test_linked_test_sets_are_found(data_root, tmp_path):
    # test/<name> linked to another disk, as training's glob follows them; a link back up the tree is searched once
    root = tmp_path / 'test'
    root.mkdir()
    (root / 'IIIT5k').symlink_to(data_root / 'test' / 'IIIT5k', target_is_directory=True)
    (root / 'mine').mkdir()
    (root / 'mine' / 'loop').symlink_to(root, target_is_directory=True)
    assert plan_test_sets(root) == ({'Benchmark': ['IIIT5k']}, [s for s in TEST_BENCHMARK if s != 'IIIT5k'])


def test_test_sets_and_errors(data_root, tmp_path):
    dm = make_dm(data_root)
    missing = ['SVT', 'IC13_1015', 'IC15_1811', 'IC15_2077', 'SVTP', 'HOST', 'WOST']
    assert plan_test_sets(data_root / 'test', std=True) == ({'Benchmark': ['IIIT5k', 'CUTE80']}, missing)
    with pytest.raises(FileNotFoundError, match='SVT'):
        dm.test_dataloaders(['SVT'])
    with pytest.raises(FileNotFoundError, match='nowhere'):
        make_dm(tmp_path / 'nowhere')
    with pytest.raises(FileNotFoundError, match='mixed'):
        make_dm(data_root, train_dir='mixed').train_dataloader()
    (tmp_path / 'bare').mkdir()
    with pytest.raises(FileNotFoundError, match='val'):
        make_dm(tmp_path / 'bare').val_dataloader()


def test_validation_and_test_exclude_unreadable_records(tmp_path, make_lmdb, png_bytes):
    # Training substitutes another sample for a bad record (a step needs a full batch); validation and test never
    # score a substitute: the bad record is left out and named.
    red = png_bytes(color=(255, 0, 0))
    make_lmdb('root/train/real', [(red, 'a'), (b'garbage', 'b')])
    make_lmdb('root/val/IC13', [(red, 'v1'), (b'garbage', 'v2'), (red, 'v3')])
    make_lmdb('root/test/IIIT5k', [(b'', 't1'), (red, 't2')])
    dm = make_dm(tmp_path / 'root')
    with pytest.warns(UserWarning, match='image-000000002'):
        assert labels_of(dm.val_dataloader()) == ['v1', 'v3']
    loader = dm.test_dataloaders(['IIIT5k'])['IIIT5k']
    assert labels_of(loader) == ['t2'] and [key for key, _ in loader.dataset.bad_records] == ['image-000000001']
    assert len(dm.train_dataset) == 2


def test_class_constants():
    dm = SceneTextDataModule
    assert dm.TEST_BENCHMARK_SUB == dm.TEST_BENCHMARK
    assert dm.TEST_BENCHMARK == (
        'IIIT5k',
        'SVT',
        'IC13_1015',
        'IC15_1811',
        'IC15_2077',
        'SVTP',
        'CUTE80',
        'HOST',
        'WOST',
    )
    assert dm.TEST_NEW == ('ArT', 'COCOv1.4', 'Uber')
    assert dm.TEST_ALL == dm.TEST_BENCHMARK + dm.TEST_NEW


# --- Transforms ------------------------------------------------------------------------------------------------------


def test_get_transform_rotation_and_pickling():
    img = Image.new('RGB', (48, 16), (255, 0, 0))
    img.putpixel((0, 0), (0, 0, 255))  # top-left corner
    t = get_transform((16, 48), rotation=90)
    out = t(img)
    assert out.shape == (3, 16, 48)
    # 90° counter-clockwise with expand: the top-left corner goes to the bottom-left, the canvas becomes 16x48.
    assert out[2, -1, 0] > out[2, 0, 0]
    clone = pickle.loads(pickle.dumps(get_transform((16, 48), augment=True, rotation=5)))
    assert clone(img).shape == (3, 16, 48)


# --- RandAugment -----------------------------------------------------------------------------------------------------


def test_rand_augment_pool_and_settings():
    t = augment.rand_augment_transform()
    assert [op.name for op in t.ops] == list(augment.RAND_TRANSFORMS) and len(t.ops) == 16
    assert 'SharpnessIncreasing' not in augment.RAND_TRANSFORMS
    assert t.num_layers == 3 and np.allclose(t.choice_weights, 1 / 16)
    assert all(op.prob == 0.5 and op.magnitude == 5 and op.magnitude_std == 0 for op in t.ops)
    assert all(op.kwargs['fillcolor'] == (128, 128, 128) for op in t.ops)


def test_rand_augment_parameters_at_magnitude_5():
    ops = {op.name: op for op in augment.rand_augment_ops(5)}
    expected = {
        'Rotate': 15.0,
        'ShearX': 0.45,
        'ShearY': 0.1,
        'TranslateXRel': 0.05,
        'TranslateYRel': 0.15,
        'PosterizeIncreasing': 2,
        'SolarizeIncreasing': 128,
        'SolarizeAdd': 55,
        'GaussianBlur': 2.0,
        'PoissonNoise': 20.0,
    }
    for name, value in expected.items():
        op = ops[name]
        assert abs(op.level_fn(op.magnitude, op.hparams)[0]) == pytest.approx(value), name
    for name in ('ColorIncreasing', 'ContrastIncreasing', 'BrightnessIncreasing'):
        op = ops[name]
        assert abs(op.level_fn(op.magnitude, op.hparams)[0] - 1) == pytest.approx(0.45)
    assert all(ops[n].level_fn is None for n in ('AutoContrast', 'Equalize', 'Invert'))


def test_rand_augment_samples_three_distinct_ops():
    t = augment.rand_augment_transform()
    calls = []
    t.ops = [lambda img, n=op.name: calls.append(n) or img for op in t.ops]
    for _ in range(200):
        t(None)
        assert len(set(calls[-3:])) == 3
    assert len(set(calls)) == 16


def test_rotate_expands_canvas():
    img = Image.new('RGB', (100, 20), (255, 255, 255))
    out = augment.rotate_expand(img, 15.0, resample=Image.BILINEAR, fillcolor=(128, 128, 128))
    assert out.size[0] > 100 and out.size[1] > 20


@pytest.mark.parametrize('size, radius, lam', [((128, 32), 2, 21), ((48, 16), 1, 11), ((3, 3), 1, 1)])
def test_blur_and_noise_clamped_by_size(size, radius, lam):
    img = Image.new('RGB', size)
    assert augment._clamp_to_size(2.0, img, 0.02) == radius
    assert augment._clamp_to_size(20.0, img, 0.2) | 1 == lam


def test_poisson_noise_shared_by_channels_and_signed():
    np.random.seed(0)
    img = Image.new('RGB', (128, 64), (128, 128, 128))
    out = np.asarray(augment.poisson_noise(img, 20.0)).astype(int)  # lam 21 at this size
    assert out.shape == (64, 128, 3)
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()  # per_channel=False
    delta = out[..., 0] - 128
    assert (delta > 0).mean() == pytest.approx(0.5, abs=0.05) and abs(np.abs(delta).mean() - 21) < 1


def test_augmentation_repeatable_with_seeds():
    t = augment.rand_augment_transform()
    img = Image.new('RGB', (60, 20), (200, 50, 50))
    outputs = []
    for _ in range(2):
        random.seed(1)
        np.random.seed(1)
        outputs.append([np.asarray(t(img)) for _ in range(20)])
    assert all(a.shape == b.shape and (a == b).all() for a, b in zip(*outputs))


def test_resume_mid_epoch_and_shard_across_processes(data_root):
    full = labels_of(make_dm(data_root, seed=3).train_dataloader())
    dm = make_dm(data_root, seed=3)
    dm.load_state_dict({'train_position': {'epoch': 0, 'batches': 1}})
    loader = dm.train_dataloader()
    # Lightning counts the batches done before the interruption into the epoch: the length stays the whole epoch.
    assert len(loader) == len(make_dm(data_root, seed=3).train_dataloader())
    resumed = labels_of(loader)
    assert resumed == full[dm.batch_size :]  # the rest of the interrupted epoch, in the same order
    # Two processes see disjoint halves of the same epoch order.
    shards = [list(ResumableSampler(10, True, 3, num_replicas=2, rank=r)) for r in (0, 1)]
    assert sorted(shards[0] + shards[1]) == list(range(10)) and len(shards[0]) == len(shards[1]) == 5


def in_curriculum_order(lengths):
    """Ordered by length + uniform(0, CURRICULUM_SPREAD): never that many characters out of order."""
    return all(a - b < ResumableSampler.CURRICULUM_SPREAD for i, a in enumerate(lengths) for b in lengths[i:])


def test_curriculum_goes_from_short_to_long_labels_then_shuffles(tmp_path, make_lmdb, png_bytes):
    red = png_bytes(color=(255, 0, 0))
    words = ['a' * n for n in range(1, 13) for _ in range(5)]
    random.Random(0).shuffle(words)
    make_lmdb('root/train/real/A', [(red, w) for w in words[:30]])
    make_lmdb('root/train/real/B', [(red, w) for w in words[30:]])
    dm = make_dm(tmp_path / 'root', curriculum_samples=60, seed=1)
    loader = dm.train_dataloader()
    first = [len(w) for w in labels_of(loader)]
    assert sorted(first) == sorted(len(w) for w in words)
    assert in_curriculum_order(first) and first != sorted(first)  # lengths mix: not simply sorted
    assert first == [
        len(w) for w in labels_of(make_dm(tmp_path / 'root', curriculum_samples=60, seed=1).train_dataloader())
    ]  # a function of (seed, epoch): resumable
    loader.sampler.set_epoch(1)
    second = [len(w) for w in labels_of(loader)]
    assert sorted(second) == sorted(first) and np.corrcoef(np.arange(len(second)), second)[0, 1] < 0.5
    # length buckets: one run of all 15 batches, sorted by length, in a shuffled batch order
    loader = make_dm(tmp_path / 'root', bucket_batches=15).train_dataloader()
    batches = [[len(w) for w in labels] for _, labels in loader]
    assert max(max(b) - min(b) for b in batches) <= 1 and [b[0] for b in batches] != sorted(b[0] for b in batches)
    with pytest.raises(ValueError, match='label length of every sample'):
        ResumableSampler(3, True, 0, lengths=[1, 2], curriculum_samples=1)


@pytest.mark.parametrize('replicas', [1, 2])
def test_curriculum_counts_samples_of_the_first_epoch_across_processes(replicas):
    lengths = [n for n in range(1, 21) for _ in range(20)]  # 400 samples

    def epoch(e, curriculum):
        shards = []
        for rank in range(replicas):
            sampler = ResumableSampler(400, True, 5, replicas, rank, lengths, curriculum)
            sampler.set_epoch(e)
            shards.append([lengths[i] for i in sampler])
        return [x for step in zip(*shards) for x in step]  # the run's order: the processes' samples interleaved

    part = epoch(0, 100)
    assert sorted(part) == sorted(lengths)
    assert in_curriculum_order(part[:100]) and part[0] <= 3 and part[99] >= 18  # short to long within 100 samples
    assert not in_curriculum_order(part[100:200])  # then shuffled
    assert in_curriculum_order(epoch(0, 400)) and not in_curriculum_order(epoch(1, 400)[:50])
    assert in_curriculum_order(epoch(0, 500)) and not in_curriculum_order(epoch(1, 500)[:50])  # capped at one epoch
    assert not in_curriculum_order(epoch(0, 0)[:50])


def batch_spread(lengths, bs):
    """Mean over batches of (longest - shortest label)."""
    batches = [lengths[i : i + bs] for i in range(0, len(lengths), bs)]
    return np.mean([max(b) - min(b) for b in batches])


@pytest.mark.parametrize('replicas', [1, 2])
def test_length_buckets_group_like_lengths_after_the_curriculum(replicas):
    rng = random.Random(0)
    lengths = [rng.randint(1, 25) for _ in range(1067)]
    bs, runs, curriculum = 8, 16, 100
    for rank in range(replicas):

        def sampler(buckets, epoch=0):
            s = ResumableSampler(1067, True, 5, replicas, rank, lengths, curriculum, buckets, bs)
            s.set_epoch(epoch)
            return s

        plain, got = list(sampler(0)), list(sampler(runs))
        assert got == list(sampler(runs))  # a function of (seed, epoch, rank): resumable
        start = -(-len(range(rank, curriculum, replicas)) // bs) * bs  # the curriculum, to a batch boundary
        assert got[:start] == plain[:start]
        for i in range(start, len(got), runs * bs):  # each run holds the samples plain shuffling puts there
            assert sorted(got[i : i + runs * bs]) == sorted(plain[i : i + runs * bs])
        got_len = [lengths[i] for i in got[start:]]
        assert batch_spread(got_len, bs) < batch_spread([lengths[i] for i in plain[start:]], bs) / 4
        # the batch order within runs is shuffled: the runs do not go from short to long
        firsts = [got_len[i : i + runs * bs : bs] for i in range(0, len(got_len) - runs * bs, runs * bs)]
        assert firsts and all(f != sorted(f) for f in firsts)
        tail = len(got) % bs  # a last partial batch stays last, with the longest labels of the last run
        last_run = got_len[(len(got_len) - 1) // (runs * bs) * (runs * bs) :]
        assert tail and min(last_run[-tail:]) >= max(last_run[:-tail])
        later = [lengths[i] for i in sampler(runs, epoch=1)]  # no curriculum after the first epoch
        assert batch_spread(later, bs) < batch_spread([lengths[i] for i in sampler(0, epoch=1)], bs) / 4
        resumed = sampler(runs)
        resumed.resume(0, 3 * bs)
        assert list(resumed) == got[3 * bs :]
    with pytest.raises(ValueError, match='label length of every sample'):
        ResumableSampler(3, True, 0, bucket_batches=2, batch_size=2)
