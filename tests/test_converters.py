"""tools/convert_dataset.py and strhub.data.converters: each dataset's published annotation format -> upright word
crops, gt.txt and an STR LMDB, with skipped words and images counted by reason.

Every test writes a tiny dataset in that dataset's own format (field names as published): scenes of grey with
coloured rectangles at known places, so that a crop's size, orientation and colour show that the right pixels were
cut out."""

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import load_tool, read_lmdb
from PIL import Image, ImageDraw
from _cli import run_cli

from strhub.data.converters.geometry import crop_word, min_area_rect, order_clockwise, rotate_vertical, signed_area

ROOT = Path(__file__).resolve().parents[1]
GREY, RED, GREEN, BLUE, YELLOW = (128, 128, 128), (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)

tool = load_tool('convert_dataset')


def rect(x, y, w, h):
    """Corners of an axis-aligned box, clockwise from the top-left."""
    return [(x, y), (x + w, y), (x + w, y + h), (x, y + h)]


def rotated_rect(cx, cy, w, h, degrees):
    """Corners of a ``w x h`` box turned clockwise by ``degrees`` around its centre, clockwise from its top-left."""
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    return [
        (cx + x * c - y * s, cy + x * s + y * c)
        for x, y in ((-w / 2, -h / 2), (w / 2, -h / 2), (w / 2, h / 2), (-w / 2, h / 2))
    ]


def scene(path: Path, size, shapes, fmt='PNG'):
    """A grey image with filled polygons ``[(corners, colour), ...]``, saved at ``path`` (as PNG by default, whatever
    the extension, so that colours stay exact)."""
    img = Image.new('RGB', size, GREY)
    draw = ImageDraw.Draw(img)
    for corners, colour in shapes:
        draw.polygon([tuple(p) for p in corners], fill=colour)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, fmt, **({'quality': 100, 'subsampling': 0} if fmt == 'JPEG' else {}))


def flat(corners):
    return [float(v) for p in corners for v in p]


def convert(capsys, *args):
    """The tool in-process, as its command line runs it: (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as e:
        run_cli(tool.main, [str(a) for a in args], prog='convert_dataset.py')
    out, err = capsys.readouterr()
    return e.value.code, out, err


def gt_lines(out: Path):
    return [tuple(line.split('\t')) for line in (out / 'gt.txt').read_text(encoding='utf-8').splitlines()]


def crop(out: Path, rel: str) -> np.ndarray:
    with Image.open(out / rel) as img:
        return np.asarray(img.convert('RGB'))


def colours(pixels: np.ndarray):
    """The distinct colours of an ``(H, W, 3)`` array."""
    return {tuple(int(v) for v in c) for c in np.unique(pixels.reshape(-1, 3), axis=0)}


def table(stdout: str):
    """The report's table as {row: (words, images)} (an empty images cell reads 0)."""
    lines = stdout.splitlines()
    start = lines.index(next(line for line in lines if line.split() == ['words', 'images']))
    rows = {}
    for line in lines[start + 1 :]:
        m = re.fullmatch(r'(kept|skipped: [a-z ]+?) +(\d+)(?: +(\d+))? *', line)
        if m is None:
            break
        rows[m[1]] = (int(m[2]), int(m[3] or 0))
    return rows


def assert_lmdb_matches_gt(out: Path, lmdb_dir: Path):
    """The LMDB holds exactly the crop files listed in gt.txt, with their labels, in order."""
    assert read_lmdb(lmdb_dir) == [((out / rel).read_bytes(), label) for rel, label in gt_lines(out)]


# --- Geometry ------------------------------------------------------------------------------------------------------


def test_min_area_rect_and_clockwise_order():
    box = np.array(rotated_rect(100, 60, 80, 24, 30))
    cloud = np.vstack([box, np.array(rotated_rect(100, 60, 40, 10, 30)), box.mean(axis=0, keepdims=True)])
    assert abs(signed_area(min_area_rect(cloud))) == pytest.approx(80 * 24)
    # Counter-clockwise or self-crossing corners come back clockwise, from the point nearest the first one.
    np.testing.assert_allclose(order_clockwise(box[::-1], box[0]), box)
    np.testing.assert_allclose(order_clockwise(box[[0, 1, 3, 2]], box[0]), box)


def test_crop_word_keeps_orientation_and_refuses_degenerate_boxes():
    img = Image.new('RGB', (120, 60), GREY)
    draw = ImageDraw.Draw(img)
    draw.rectangle([10, 10, 29, 29], fill=RED)  # left half of a 40 x 20 word at (10, 10)
    draw.rectangle([30, 10, 49, 29], fill=YELLOW)
    box = np.array(rect(10, 10, 40, 20), dtype=float)
    for points in (box, np.roll(box[::-1], 1, axis=0)):  # clockwise, then counter-clockwise: never mirrored
        a = np.asarray(crop_word(img, points))
        assert a.shape == (20, 40, 3) and colours(a[:, :20]) == {RED} and colours(a[:, 20:]) == {YELLOW}
    assert crop_word(img, np.array(rect(200, 10, 20, 10), dtype=float)) == 'outside image'
    assert crop_word(img, np.array([(0, 5), (30, 5), (60, 5), (90, 5)], dtype=float)) == 'degenerate box'
    assert crop_word(img, np.array(rect(5, 5, 0.2, 30), dtype=float)) == 'degenerate box'
    tall = Image.new('RGB', (10, 40))
    assert rotate_vertical(tall, 'none', 1.5)[0].size == (10, 40)
    assert rotate_vertical(tall, 'cw', 1.5)[0].size == (40, 10)
    assert rotate_vertical(tall, 'ccw', 5.0) == (tall, False)  # not tall enough for that ratio


# --- COCO-Text v1.4 ------------------------------------------------------------------------------------------------


def test_coco_text(tmp_path, capsys):
    root = tmp_path / 'train2014'
    scene(
        root / 'COCO_train2014_000000000001.jpg',
        (200, 100),
        [(rect(20, 30, 60, 20), RED), (rect(150, 60, 40, 20), BLUE)],
    )
    (root / 'COCO_train2014_000000000003.jpg').write_bytes(b'not an image at all')
    scene(root / 'COCO_train2014_000000000004.jpg', (50, 50), [])

    def ann(i, image_id, bbox, text=None, legibility='legible', **extra):
        a = {'id': i, 'image_id': image_id, 'bbox': bbox, 'area': bbox[2] * bbox[3], 'class': 'machine printed'}
        a.update(legibility=legibility, language='english' if text else 'na', **extra)
        return a | ({'utf8_string': text} if text is not None else {})

    anns = [
        ann(10, 1, [20, 30, 60, 20], 'Red', polygon=flat(rect(20, 30, 60, 20))),
        ann(11, 1, [100, 10, 30, 30], legibility='illegible'),  # no utf8_string: illegible
        ann(12, 1, [150, 60, 40, 20], 'Blue &amp; co'),  # no polygon: the bbox; HTML entity unescaped
        ann(13, 1, [300, 300, 10, 10], 'far'),  # outside the 200 x 100 image
        ann(14, 1, [10, 10, 120, 0], 'flat', polygon=[10, 10, 50, 10, 90, 10, 130, 10]),  # zero area
        ann(15, 2, [0, 0, 10, 10], 'gone'),  # image 2 is missing
        ann(16, 3, [0, 0, 10, 10], 'bad'),  # image 3 is not an image
        ann(17, 3, [0, 0, 20, 10], 'bad2'),
        ann(18, 4, [0, 0, 10, 10], 'val word'),  # image 4 is in the val set
    ]
    imgs = {
        str(i): {'id': i, 'file_name': f'COCO_train2014_{i:012d}.jpg', 'set': s, 'width': 200, 'height': 100}
        for i, s in ((1, 'train'), (2, 'train'), (3, 'train'), (4, 'val'))
    }
    data = {
        'cats': {},
        'info': {'version': '1.4'},
        'imgs': imgs,
        'anns': {str(a['id']): a for a in anns},
        'imgToAnns': {'1': [10, 11, 12, 13, 14], '2': [15], '3': [16, 17], '4': [18]},
    }
    (tmp_path / 'COCO_Text.json').write_text(json.dumps(data))
    out = tmp_path / 'out'
    code, stdout, _ = convert(
        capsys, 'cocotext', tmp_path / 'COCO_Text.json', root, out, '--split', 'train', '--crop_format', 'png'
    )
    assert code == 0
    assert gt_lines(out) == [
        ('images/COCO_train2014_000000000001_0.png', 'Red'),
        ('images/COCO_train2014_000000000001_2.png', 'Blue & co'),
    ]
    red, blue = crop(out, gt_lines(out)[0][0]), crop(out, gt_lines(out)[1][0])
    assert red.shape == (20, 60, 3) and colours(red) == {RED}
    assert blue.shape == (20, 40, 3) and colours(blue) == {BLUE}
    assert table(stdout) == {
        'kept': (2, 1),
        'skipped: degenerate box': (1, 0),
        'skipped: illegible': (1, 0),
        'skipped: outside image': (1, 0),
        'skipped: missing image': (1, 1),
        'skipped: unreadable image': (2, 1),
    }
    assert 'COCO_train2014_000000000002.jpg: missing image' in stdout
    assert f'{root / "COCO_train2014_000000000003.jpg"}: unreadable image (UnidentifiedImageError: ' in stdout
    assert_lmdb_matches_gt(out, out / 'lmdb')
    # A second run refuses to mix with the first, and replaces it with --overwrite (here: the val split).
    code, _, err = convert(capsys, 'cocotext', tmp_path / 'COCO_Text.json', root, out)
    assert code == 2 and err.strip().splitlines() == [
        f'convert_dataset.py: error: {out / "images"} exists: an earlier conversion (use --overwrite to replace it)'
    ]
    code, _, _ = convert(capsys, 'cocotext', tmp_path / 'COCO_Text.json', root, out, '--split', 'val', '--overwrite')
    assert code == 0 and gt_lines(out) == [('images/COCO_train2014_000000000004_0.jpg', 'val word')]
    assert sorted(p.name for p in (out / 'images').iterdir()) == ['COCO_train2014_000000000004_0.jpg']
    assert_lmdb_matches_gt(out, out / 'lmdb')


# --- ArT -----------------------------------------------------------------------------------------------------------


def test_art_rotated_curved_and_languages(tmp_path, capsys):
    turned = rotated_rect(70, 60, 80, 24, 30)  # a word turned 30 degrees clockwise
    curve_box = rect(140, 10, 60, 20)
    scene(tmp_path / 'train_images' / 'gt_0.jpg', (220, 120), [(turned, GREEN), (curve_box, BLUE)])
    scene(tmp_path / 'train_images' / 'gt_1.jpg', (60, 40), [(rect(5, 5, 40, 20), RED)])
    # A curved-text polygon of 8 points (top edge left to right, bottom edge back), around the blue box.
    curve = [[140, 10], [160, 10], [180, 10], [200, 10], [200, 30], [180, 30], [160, 30], [140, 30]]

    def word(points, text, language='Latin', illegible=False):
        return {
            'transcription': text,
            'points': [[round(x, 3), round(y, 3)] for x, y in points],
            'language': language,
            'illegibility': illegible,
        }

    labels = {
        'gt_0': [word(turned, 'Turned'), word(curve, 'Curved'), word(rect(5, 5, 20, 20), '###', 'None', True)],
        'gt_1': [word(rect(5, 5, 40, 20), '中文', 'Chinese')],  # dropped by --languages latin
        'gt_9': [word(rect(0, 0, 10, 10), 'nowhere')],  # no image gt_9.*
    }
    (tmp_path / 'train_labels.json').write_text(json.dumps(labels, ensure_ascii=False), encoding='utf-8')
    out = tmp_path / 'out'
    args = ('art', tmp_path / 'train_labels.json', tmp_path / 'train_images', out, '--languages', 'latin')
    code, stdout, _ = convert(capsys, *args, '--crop_format', 'png')
    assert code == 0
    assert gt_lines(out) == [('images/gt_0_0.png', 'Turned'), ('images/gt_0_1.png', 'Curved')]
    green, blue = crop(out, 'images/gt_0_0.png'), crop(out, 'images/gt_0_1.png')
    assert green.shape == (24, 80, 3) and colours(green[3:-3, 3:-3]) == {GREEN}  # upright: the warp undid the turn
    assert blue.shape == (20, 60, 3) and colours(blue) == {BLUE}
    assert table(stdout) == {
        'kept': (2, 1),
        'skipped: illegible': (1, 0),
        'skipped: other language': (1, 0),
        'skipped: missing image': (1, 1),
    }
    assert 'gt_9.*: missing image' in stdout
    assert_lmdb_matches_gt(out, out / 'lmdb')


# --- TextOCR -------------------------------------------------------------------------------------------------------


def test_textocr_default_jpeg_crops(tmp_path, capsys):
    # TextOCR names images train/<id>.jpg; its archive unpacks them to train_images/<id>.jpg.
    scene(tmp_path / 'train_images' / 'a4ea732cd3d5948a.jpg', (160, 80), [(rect(10, 20, 64, 24), RED)], fmt='JPEG')
    anns = {
        'a4ea732cd3d5948a_1': {'points': flat(rect(10, 20, 64, 24)), 'bbox': [10, 20, 64, 24], 'utf8_string': 'Open'},
        'a4ea732cd3d5948a_2': {'points': flat(rect(90, 20, 30, 20)), 'bbox': [90, 20, 30, 20], 'utf8_string': '.'},
        'a4ea732cd3d5948a_3': {'points': [1, 2, 3], 'bbox': [10, 20, 64, 24], 'utf8_string': 'Box'},  # bbox instead
    }
    for ann_id, a in anns.items():
        a.update(id=ann_id, image_id='a4ea732cd3d5948a', area=a['bbox'][2] * a['bbox'][3])
    data = {
        'imgs': {
            'a4ea732cd3d5948a': {
                'id': 'a4ea732cd3d5948a',
                'width': 160,
                'height': 80,
                'set': 'train',
                'file_name': 'train/a4ea732cd3d5948a.jpg',
            }
        },
        'anns': anns,
        'imgToAnns': {'a4ea732cd3d5948a': list(anns)},
    }
    (tmp_path / 'TextOCR_0.1_train.json').write_text(json.dumps(data))
    out = tmp_path / 'out'
    code, stdout, _ = convert(capsys, 'textocr', tmp_path / 'TextOCR_0.1_train.json', tmp_path / 'train_images', out)
    assert code == 0
    assert gt_lines(out) == [('images/a4ea732cd3d5948a_0.jpg', 'Open'), ('images/a4ea732cd3d5948a_2.jpg', 'Box')]
    for rel, _ in gt_lines(out):
        a = crop(out, rel).astype(int)
        assert a.shape == (24, 64, 3) and np.abs(a[2:-2, 2:-2] - RED).max() <= 12  # JPEG: nearly red
    assert table(stdout) == {'kept': (2, 1), 'skipped: illegible': (1, 0)}
    assert_lmdb_matches_gt(out, out / 'lmdb')


# --- LSVT ----------------------------------------------------------------------------------------------------------


def test_lsvt_two_image_folders_and_clipping(tmp_path, capsys):
    scene(tmp_path / 'train_full_images_0' / 'gt_0.jpg', (100, 60), [(rect(60, 10, 40, 20), GREEN)])
    scene(tmp_path / 'train_full_images_1' / 'gt_1.jpg', (100, 60), [(rect(10, 30, 50, 20), BLUE)])

    def word(corners, text, illegible=False):
        return {'transcription': text, 'points': [list(p) for p in corners], 'illegibility': illegible}

    labels = {
        'gt_0': [word(rect(60, 10, 60, 20), '招牌'), word(rect(0, 0, 10, 10), '###', True)],  # overhangs: clipped
        'gt_1': [
            word(rect(10, 30, 50, 20), ' LS\tV\nT '),  # whitespace runs, tabs and line breaks become one space
            word(rect(120, 70, 20, 10), 'away'),  # outside the image
            word(rect(0, 0, 10, 10), ' '),
        ],
    }
    (tmp_path / 'train_full_labels.json').write_text(json.dumps(labels, ensure_ascii=False), encoding='utf-8')
    out, lmdb_dir = tmp_path / 'out', tmp_path / 'data' / 'train' / 'real' / 'LSVT'
    code, stdout, _ = convert(
        capsys,
        'lsvt',
        tmp_path / 'train_full_labels.json',
        tmp_path,
        out,
        '--crop_format',
        'png',
        '--lmdb_dir',
        lmdb_dir,
    )
    assert code == 0
    assert gt_lines(out) == [
        ('images/train_full_images_0/gt_0_0.png', '招牌'),
        ('images/train_full_images_1/gt_1_0.png', 'LS V T'),
    ]
    clipped = crop(out, 'images/train_full_images_0/gt_0_0.png')
    assert clipped.shape == (20, 40, 3) and colours(clipped) == {GREEN}  # only the part inside the image
    assert table(stdout) == {
        'kept': (2, 2),
        'skipped: empty label': (1, 0),
        'skipped: illegible': (1, 0),
        'skipped: outside image': (1, 0),
    }
    assert not (out / 'lmdb').exists()
    assert_lmdb_matches_gt(out, lmdb_dir)


# --- MLT19 ---------------------------------------------------------------------------------------------------------


def test_mlt19(tmp_path, capsys):
    scene(tmp_path / 'ImagesPart1' / 'tr_img_00001.png', (120, 60), [(rect(20, 30, 60, 20), YELLOW)])
    (tmp_path / 'ImagesPart2').mkdir()
    (tmp_path / 'ImagesPart2' / 'tr_img_00003.jpg').write_bytes(b'\xff\xd8\xff\xe0 truncated')
    gt = tmp_path / 'train_gt_t13'
    gt.mkdir()
    (gt / 'tr_img_00001.txt').write_text(
        '\ufeff20,30,80,30,80,50,20,50,Latin,Hello, world\n'  # commas after the 9th one belong to the transcription
        '0,0,10,0,10,10,0,10,Latin,###\n'
        'a,b,c,Latin,broken\n'
        '90,5,110,5,110,15,90,15,Arabic,مرحبا\n',
        encoding='utf-8',
    )
    (gt / 'tr_img_00002.txt').write_text('0,0,10,0,10,10,0,10,Latin,lost\n', encoding='utf-8')
    (gt / 'tr_img_00003.txt').write_text('0,0,10,0,10,10,0,10,Latin,corrupt\n', encoding='utf-8')
    out = tmp_path / 'out'
    code, stdout, _ = convert(
        capsys, 'mlt19', gt, tmp_path, out, '--languages', 'Latin,Symbols', '--crop_format', 'png'
    )
    assert code == 0
    assert gt_lines(out) == [('images/ImagesPart1/tr_img_00001_0.png', 'Hello, world')]
    hello = crop(out, 'images/ImagesPart1/tr_img_00001_0.png')
    assert hello.shape == (20, 60, 3) and colours(hello) == {YELLOW}
    assert table(stdout) == {
        'kept': (1, 1),
        'skipped: illegible': (1, 0),
        'skipped: malformed annotation': (1, 0),
        'skipped: other language': (1, 0),
        'skipped: missing image': (1, 1),
        'skipped: unreadable image': (1, 1),
    }
    assert 'tr_img_00002.*: missing image' in stdout and 'tr_img_00003.jpg' in stdout
    assert_lmdb_matches_gt(out, out / 'lmdb')


# --- Uber-Text -----------------------------------------------------------------------------------------------------


def test_uber_text_vertical_rotation(tmp_path, capsys):
    folder = tmp_path / 'train' / '1Kx1K'
    # A vertical word 20 x 80: green top half, blue bottom half.
    scene(
        folder / '0001.jpg',
        (200, 100),
        [(rect(20, 10, 20, 40), GREEN), (rect(20, 50, 20, 40), BLUE), (rect(100, 10, 60, 20), RED)],
    )
    (folder / 'truth_0001.txt').write_text(
        '20 10 40 10 40 90 20 90\t"TALL"\tBusinessName\n100 10 160 10 160 30 100 30 15\n0 0 5 0 5 5 0 5\t"###"\tNone\n'
    )
    for rotation, left, right in (('ccw', GREEN, BLUE), ('cw', BLUE, GREEN)):
        out = tmp_path / rotation
        code, stdout, _ = convert(
            capsys, 'ubertext', folder, folder, out, '--rotation', rotation, '--crop_format', 'png'
        )
        assert code == 0
        assert gt_lines(out) == [('images/0001_0.png', 'TALL'), ('images/0001_1.png', '15')]
        tall = crop(out, 'images/0001_0.png')  # turned: the top of the word went to the left (ccw) or right (cw)
        assert tall.shape == (20, 80, 3) and colours(tall[:, :40]) == {left} and colours(tall[:, 40:]) == {right}
        assert colours(crop(out, 'images/0001_1.png')) == {RED}
        assert table(stdout) == {'kept': (2, 1), 'skipped: illegible': (1, 0)}
        assert '(1 vertical crops rotated)' in stdout
        assert_lmdb_matches_gt(out, out / 'lmdb')
    code, _, _ = convert(capsys, 'ubertext', folder, folder, tmp_path / 'none', '--crop_format', 'png')
    assert code == 0 and crop(tmp_path / 'none', 'images/0001_0.png').shape == (80, 20, 3)  # left as it is


# --- Command-line errors -------------------------------------------------------------------------------------------


def test_cli_errors(tmp_path, capsys):
    (tmp_path / 'labels.json').write_text('{"gt_0": [')  # truncated JSON
    labels, out = tmp_path / 'labels.json', tmp_path / 'o'
    cases = [
        (['art', labels, tmp_path, out, '--vertical_ratio', '0'], '--vertical_ratio must be > 0 (got 0.0)'),
        (
            ['art', labels, tmp_path, out, '--split', 'train'],
            '--split: art has no split field (each split has its own annotations)',
        ),
        (['cocotext', labels, tmp_path, out, '--split', 'test'], '--split test: cocotext splits are train, val'),
        (
            ['lsvt', labels, tmp_path, out, '--languages', 'Latin'],
            '--languages: lsvt annotations have no language field',
        ),
        (['mlt19', labels, tmp_path, out], f'mlt19 annotations (the folder of gt .txt files) not found: {labels}'),
        (['art', labels, tmp_path / 'nope', out], f'image folder not found: {tmp_path / "nope"}'),
        (['art', labels, tmp_path, out], f'cannot read {labels} as JSON: Expecting value: line 1 column 11 (char 10)'),
    ]
    for args, message in cases:
        code, stdout, err = convert(capsys, *args)
        assert code == 2 and stdout == '' and err.strip().splitlines() == [f'convert_dataset.py: error: {message}']
    assert not out.exists()  # a bad annotation file is found before anything is written
    labels.write_text(
        json.dumps({'gt_0': [{'transcription': '###', 'points': rect(0, 0, 9, 9), 'illegibility': True}]})
    )
    code, stdout, err = convert(capsys, 'art', labels, tmp_path, out)
    assert code == 1 and table(stdout) == {'kept': (0, 0), 'skipped: illegible': (1, 0)}
    assert err.strip().splitlines()[-1] == 'convert_dataset.py: error: no word was kept: no LMDB written'
    # The real process: one line on stderr, exit code 2, no traceback.
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / 'tools' / 'convert_dataset.py'),
            'art',
            'x.json',
            '.',
            'o',
            '--vertical_ratio',
            '-1',
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert r.returncode == 2 and r.stdout == ''
    assert r.stderr.strip().splitlines() == ['convert_dataset.py: error: --vertical_ratio must be > 0 (got -1.0)']
