"""LmdbDataset and build_tree_dataset (spec §3.1, §3.2): label filtering, corrupt data, workers, tree search."""

import logging
import os
import pickle
import unicodedata
import warnings

import lmdb
import pytest
from PIL import Image
from torch.utils.data import DataLoader

from strhub.data.dataset import (
    CorruptRecordError,
    CorruptRecordWarning,
    InvalidLmdbError,
    LmdbDataset,
    build_tree_dataset,
)
from strhub.data.lmdb_io import image_key, label_key
from strhub.data.transforms import get_transform
from strhub.data.utils import CHARSETS

CS36, CS94 = CHARSETS['36_lowercase'], CHARSETS['94_full']


def put(path, items: dict = (), delete=()):
    """Edits an LMDB in place: raw key -> bytes puts, then key deletions."""
    env = lmdb.open(str(path))
    with env.begin(write=True) as txn:
        for k, v in dict(items).items():
            txn.put(k, v)
        for k in delete:
            txn.delete(k)
    env.close()


def colour(img: Image.Image):
    return img.getpixel((0, 0))


# --- Label preprocessing ---------------------------------------------------------------------------------------------

FILTER_CASES = [
    # (raw label, kept label or None)
    ('ab c\td', 'abcd'),  # whitespace removed before the length check
    ('café', 'cafe'),  # NFKD + ASCII
    ('ﬁx', 'fix'),  # compatibility decomposition of the ligature
    ('日本', None),  # nothing ASCII left: empty
    ('a' * 20 + '!' * 6, None),  # 26 chars: skipped although the charset would shorten it to 20
    ('b' * 25, 'b' * 25),  # exactly the maximum
    ('x y' * 9, 'xy' * 9),  # 27 chars with spaces, 18 without: kept
    ('!?.', None),  # empty after the charset adapter
    ('HeLLo!', 'hello'),  # case folding to the 36-char charset
]


def test_label_filtering(make_lmdb):
    root = make_lmdb('ds', [raw for raw, _ in FILTER_CASES])
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # filtering is normal: no warning
        ds = LmdbDataset(root, CS36, 25)
    kept = [(i + 1, out) for i, (_, out) in enumerate(FILTER_CASES) if out is not None]
    assert ds.labels == [out for _, out in kept]
    assert ds.filtered_index_list == [i for i, _ in kept]
    assert len(ds) == len(kept)
    assert ds.num_skipped['too_long'] == 1 and ds.num_skipped['empty_label'] == 2
    assert sum(ds.num_skipped.values()) == len(FILTER_CASES) - len(kept)
    # Each image is the one of its own record.
    img, label = ds[1]
    assert label == 'cafe' and img.mode == 'RGB' and colour(img) == (1, 7, 200)


def test_label_filtering_switches(make_lmdb):
    root = make_lmdb('ds', ['ab c', 'café', 'A-b'])
    ds = LmdbDataset(root, CS94, 25, remove_whitespace=False, normalize_unicode=False)
    assert ds.labels == ['abc', 'caf', 'A-b']  # space and é are not in the charset: removed by the adapter
    assert LmdbDataset(root, CS94, 3, remove_whitespace=False).labels == ['A-b']  # 'ab c' is 4 long with its space
    assert LmdbDataset(root, CS94, 3).labels == ['abc', 'A-b']


def test_own_script_labels_keep_their_characters(make_lmdb, caplog):
    """A non-ASCII charset keeps its characters (NFC, not folded to ASCII); a label with a character outside it is
    skipped and counted, not trained on with the character deleted. An ASCII charset still folds (the original)."""
    greek = CS36 + 'αβγδεζηθικλμνξοπρσςτυφχψωάέήίόύώ'
    decomposed = unicodedata.normalize('NFD', 'καφές')  # e + combining acute, as some tools write labels
    labels = [decomposed, 'ΟΔΟΣ 12', 'café', 'σκύλοςж', 'жж', 'Ωmega!']
    root = make_lmdb('ds', labels)
    ds = LmdbDataset(root, greek, 25)
    assert ds.labels == ['καφές', 'οδος12']  # composed; lower-cased like any lower-case charset; whitespace removed
    assert ds.num_skipped['unsupported_chars'] == 4  # é, ж (twice, one label), ж, !
    assert ds.unsupported_chars == {'é': 1, 'ж': 3, '!': 1}
    assert ds.filtered_index_list == [1, 2]
    summary = ds.skip_summary()
    assert '4 unsupported_chars' in summary and "'ж' 3" in summary
    # The same labels with the ASCII benchmark charset: the original's folding and deletion
    ascii_ds = LmdbDataset(root, CS36, 25)
    assert ascii_ds.labels == ['12', 'cafe', 'mega']  # the Greek words vanish: why a non-ASCII charset keeps them
    assert ascii_ds.num_skipped['empty_label'] == 3 and ascii_ds.num_skipped['unsupported_chars'] == 0


def test_min_image_dim(make_lmdb, png_bytes):
    root = make_lmdb(
        'ds',
        [
            (png_bytes(size=(48, 16)), 'big'),
            (png_bytes(size=(48, 8)), 'flat'),
            (png_bytes(size=(9, 16)), 'thin'),
            (png_bytes(size=(10, 10)), 'edge'),
        ],
    )
    assert LmdbDataset(root, CS36, 25).labels == ['big', 'flat', 'thin', 'edge']
    ds = LmdbDataset(root, CS36, 25, min_image_dim=10)
    assert ds.labels == ['big', 'edge'] and ds.num_skipped['too_small'] == 2


def test_images_are_rgb_and_indices_checked(make_lmdb, png_bytes):
    root = make_lmdb('ds', [(png_bytes(color=30, mode='L'), 'g'), (png_bytes(color=(1, 2, 3)), 'x')])
    ds = LmdbDataset(root, CS36, 25)
    img, label = ds[0]
    assert label == 'g' and img.mode == 'RGB' and colour(img) == (30, 30, 30)
    assert ds[-1][1] == 'x' and colour(ds[1][0]) == (1, 2, 3)
    with pytest.raises(IndexError):
        ds[2]


def test_transform_applied(make_lmdb):
    ds = LmdbDataset(make_lmdb('ds', ['abc']), CS36, 25, transform=get_transform((8, 24)))
    img, label = ds[0]
    assert img.shape == (3, 8, 24) and label == 'abc'


# --- Corrupt records and files ---------------------------------------------------------------------------------------


@pytest.fixture
def corrupt_lmdb(make_lmdb):
    """Records 1..8; 2: undecodable image, 3: no label, 4: no image, 5: non-UTF-8 label."""
    root = make_lmdb('bad', [f'w{i}' for i in range(1, 9)])
    put(root, {image_key(2): b'not an image', label_key(5): b'\xff\xfe'}, delete=[label_key(3), image_key(4)])
    return root


def test_bad_labels_skipped_with_one_warning(corrupt_lmdb):
    with pytest.warns(CorruptRecordWarning) as record:
        ds = LmdbDataset(corrupt_lmdb, CS36, 25)
    assert len(record) == 1
    msg = str(record[0].message)
    assert str(corrupt_lmdb) in msg and 'label-000000003' in msg and 'label-000000005' in msg
    assert 'missing' in msg and 'UTF-8' in msg
    assert ds.labels == ['w1', 'w2', 'w4', 'w6', 'w7', 'w8']
    assert ds.num_skipped['missing_label'] == 1 and ds.num_skipped['undecodable_label'] == 1


def test_bad_images_replaced_by_next_sample(corrupt_lmdb):
    with pytest.warns(CorruptRecordWarning):
        ds = LmdbDataset(corrupt_lmdb, CS36, 25)
    with pytest.warns(CorruptRecordWarning) as record:
        img, label = ds[1]  # w2 undecodable, w4 missing: falls through to w6
    assert len(record) == 1  # one warning per dataset (and process), although two images were bad
    msg = str(record[0].message)
    assert str(corrupt_lmdb) in msg and 'image-000000002' in msg and 'index 1' in msg
    assert label == 'w6' and colour(img) == (5, 35, 200)
    assert ds.num_skipped['undecodable_image'] == 1 and ds.num_skipped['missing_image'] == 1
    assert ds.bad_records[-2:] == [
        ('image-000000002', 'cannot identify image file'),
        ('image-000000004', 'image key missing'),
    ]
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert ds[2][1] == 'w6' and ds[3][1] == 'w6'  # known bad items: no new warning, same substitute
    assert ds.num_skipped['missing_image'] == 1  # counted once per item


def test_bad_image_at_end_wraps_around(make_lmdb):
    root = make_lmdb('ds', ['a', 'b', 'c'])
    put(root, {image_key(3): b'\x89PNG broken'})
    ds = LmdbDataset(root, CS36, 25)
    with pytest.warns(CorruptRecordWarning):
        assert ds[2][1] == 'a'


def test_min_image_dim_bad_images_skipped_at_construction(corrupt_lmdb):
    with pytest.warns(CorruptRecordWarning) as record:
        ds = LmdbDataset(corrupt_lmdb, CS36, 25, min_image_dim=1)
    assert len(record) == 1 and 'image-000000002' in str(record[0].message)
    assert ds.labels == ['w1', 'w6', 'w7', 'w8']
    assert ds.num_skipped['undecodable_image'] == ds.num_skipped['missing_image'] == 1


def test_corrupt_dataset_through_workers(corrupt_lmdb):
    with pytest.warns(CorruptRecordWarning):
        ds = LmdbDataset(corrupt_lmdb, CS36, 25, transform=get_transform((8, 16)))
    loader = DataLoader(ds, batch_size=2, num_workers=2)
    labels = [label for _, labels in loader for label in labels]
    assert labels == ['w1', 'w6', 'w6', 'w6', 'w7', 'w8']  # the main process never opened the LMDB
    assert ds._env is None


def test_verify_images_excludes_bad_records(corrupt_lmdb, png_bytes):
    """Evaluation: bad records are neither counted nor replaced by another sample, also through workers."""
    truncated = png_bytes(size=(64, 32))
    put(corrupt_lmdb, {image_key(6): b'', image_key(7): truncated[: len(truncated) // 2]})  # header intact
    with pytest.warns(CorruptRecordWarning) as record:
        ds = LmdbDataset(corrupt_lmdb, CS36, 25, transform=get_transform((8, 16)), verify_images=True)
    assert len(record) == 1 and 'image-000000007 (image file is truncated)' in str(record[0].message)
    assert ds.labels == ['w1', 'w8'] and len(ds) == 2
    assert ds.bad_records == [
        ('image-000000002', 'cannot identify image file'),
        ('label-000000003', 'label key missing'),
        ('image-000000004', 'image key missing'),
        ('label-000000005', 'label is not valid UTF-8'),
        ('image-000000006', 'image is empty (0 bytes)'),
        ('image-000000007', 'image file is truncated'),
    ]
    assert ds.num_skipped['undecodable_image'] == 3 and ds.num_skipped['missing_image'] == 1
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        labels = [label for _, labels in DataLoader(ds, batch_size=3, num_workers=2) for label in labels]
    assert labels == ['w1', 'w8']


def test_verify_images_never_substitutes(make_lmdb):
    root = make_lmdb('ds', ['a', 'b'])
    ds = LmdbDataset(root, CS36, 25, verify_images=True)
    put(root, {image_key(1): b'changed'})
    with pytest.raises(CorruptRecordError, match=r'image-000000001 \(cannot identify image file\)'):
        ds[0]


def test_pickle_after_use(make_lmdb):
    ds = LmdbDataset(make_lmdb('ds', ['ab', 'cd']), CS36, 25)
    assert ds[0][1] == 'ab'  # opens the environment in this process
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._env is None and clone[1][1] == 'cd'


def test_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match='nowhere'):
        LmdbDataset(tmp_path / 'nowhere', CS36, 25)
    (tmp_path / 'empty').mkdir()
    with pytest.raises(FileNotFoundError, match='data.mdb'):
        LmdbDataset(tmp_path / 'empty', CS36, 25)


@pytest.mark.parametrize('damage', ['garbage', 'empty', 'truncated'])
def test_damaged_data_mdb(make_lmdb, damage):
    root = make_lmdb('ds', [f'word{i}' for i in range(300)])
    mdb = root / 'data.mdb'
    data = mdb.read_bytes()
    assert len(data) > 16 * 4096  # enough pages for the truncation to cut into the tree
    mdb.write_bytes({'garbage': os.urandom(len(data)), 'empty': b'', 'truncated': data[: len(data) // 2]}[damage])
    with pytest.raises(InvalidLmdbError, match=str(root)) as info:  # never a crash (SIGBUS) or a raw lmdb error
        LmdbDataset(root, CS36, 25)
    assert isinstance(info.value, ValueError)
    if damage == 'truncated':
        assert 'truncated' in str(info.value)


@pytest.mark.parametrize('value', [None, b'many', b'-1'])
def test_bad_num_samples(make_lmdb, value):
    root = make_lmdb('ds', ['abc'])
    if value is None:
        put(root, delete=[b'num-samples'])
    else:
        put(root, {b'num-samples': value})
    with pytest.raises(InvalidLmdbError, match='num-samples') as info:
        LmdbDataset(root, CS36, 25)
    assert str(root) in str(info.value)


# --- build_tree_dataset ----------------------------------------------------------------------------------------------


def test_build_tree_dataset(make_lmdb, tmp_path, caplog):
    make_lmdb('tree/b', ['b1', 'b2'])
    make_lmdb('tree/a/y', ['ay'])
    make_lmdb('tree/a/x', ['ax1', 'ax2', 'TOO-LONG-FOR-FIVE'])
    (tmp_path / 'tree' / 'c').mkdir()  # no LMDB: ignored
    with caplog.at_level(logging.INFO, logger='strhub.data.dataset'):
        ds = build_tree_dataset(tmp_path / 'tree', CS36, 5, transform=None)
    assert [d.root for d in ds.datasets] == [str(tmp_path / 'tree' / n) for n in ('a/x', 'a/y', 'b')]  # sorted
    assert [ds[i][1] for i in range(len(ds))] == ['ax1', 'ax2', 'ay', 'b1', 'b2']
    assert 'lmdb:\ta/x\tnum samples: 2' in caplog.text and 'lmdb:\tb\tnum samples: 2' in caplog.text


def test_build_tree_dataset_single_lmdb_at_root(make_lmdb):
    root = make_lmdb('one', ['abc'])
    assert len(build_tree_dataset(root, CS36, 25)) == 1


def test_build_tree_dataset_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match='missing'):
        build_tree_dataset(tmp_path / 'missing', CS36, 25)
    with pytest.raises(FileNotFoundError, match='no LMDB'):
        build_tree_dataset(tmp_path, CS36, 25)


def test_env_shared_in_process_and_reopened_after_fork(make_lmdb):
    root = make_lmdb('ds', ['ab', 'cd', 'ef', 'gh'])
    first = LmdbDataset(root, CS36, 25, transform=get_transform((8, 16)))
    assert first[0][1] == 'ab'  # environment open in the main process
    second = LmdbDataset(root, CS36, 25)  # py-lmdb refuses a second open of the same environment: shared instead
    assert second[1][1] == 'cd' and second.env is first.env
    loader = DataLoader(first, batch_size=2, num_workers=2)  # forked workers inherit the open handle
    assert [label for _, labels in loader for label in labels] == ['ab', 'cd', 'ef', 'gh']
    del first, second, loader
    put(root, {label_key(1): b'xy'})  # all handles released: the LMDB can be opened for writing again
    assert LmdbDataset(root, CS36, 25).labels[0] == 'xy'
