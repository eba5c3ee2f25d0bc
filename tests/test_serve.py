"""tools/serve.py as its users meet it: the real server in a subprocess on a free loopback port, over HTTP."""

import base64
import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import pytest
from PIL import Image
from helpers import FIXTURES, REPO

pytest.importorskip('fastapi', reason="the serve extra is not installed: pip install -e '.[serve]'")
pytest.importorskip('uvicorn', reason="the serve extra is not installed: pip install -e '.[serve]'")
pytest.importorskip('multipart', reason="the serve extra is not installed: pip install -e '.[serve]'")

IMAGES = sorted(FIXTURES.glob('img*.png'))
# Small limits, so that each can be crossed cheaply.
LIMITS = ['--max_images', '4', '--max_bytes', '200000', '--max_pixels', '1000000']

Upload = Tuple[str, bytes, str]  # file name, content, content type


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@contextmanager
def start_server(checkpoint: str, *args: str, timeout: float = 90) -> Iterator[str]:
    """``tools/serve.py checkpoint args`` on a free loopback port; yields its base URL once /health answers."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(REPO / 'tools' / 'serve.py'), checkpoint, '--port', str(port), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f'http://127.0.0.1:{port}'
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                pytest.fail(f'the server exited with {proc.returncode}:\n{proc.stdout.read()}')
            try:
                if request(url + '/health')[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail('the server did not answer /health in time')
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def request(url: str, data: Optional[bytes] = None, content_type: Optional[str] = None) -> Tuple[int, Any]:
    """(status, decoded JSON body) of a GET, or a POST of ``data``."""
    req = urllib.request.Request(url, data=data, method='GET' if data is None else 'POST')
    if content_type:
        req.add_header('Content-Type', content_type)
    try:
        with urllib.request.urlopen(req, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def multipart(files: Sequence[Upload], field: str = 'files') -> Tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = []
    for name, content, ctype in files:
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{name}"\r\n'
        parts.append(head.encode() + f'Content-Type: {ctype}\r\n\r\n'.encode() + content + b'\r\n')
    return b''.join(parts) + f'--{boundary}--\r\n'.encode(), f'multipart/form-data; boundary={boundary}'


def post_files(url: str, files: Sequence[Upload], query: str = '') -> Tuple[int, Any]:
    body, ctype = multipart(files)
    return request(f'{url}/read{query}', body, ctype)


def png(path: Path) -> Upload:
    return path.name, path.read_bytes(), 'image/png'


# read.py's results on IMAGES per option set, run at once (each run is seconds of imports and model loading).
READ_PY_RUNS = {
    'batch': (),
    'single': ('--batch_size', '1'),
    'nar0': ('--batch_size', '1', '--refine_iters', '0', '--decode', 'nar'),
    'second_look': ('--second_look', '0.95'),
}


@pytest.fixture(scope='module')
def read_py() -> Dict[str, List[Dict[str, Any]]]:
    images = [str(p) for p in IMAGES]
    procs = {
        name: subprocess.Popen(
            [sys.executable, str(REPO / 'tools' / 'read.py'), 'clip4str-tiny', *images, '--format', 'json', *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, args in READ_PY_RUNS.items()
    }
    results = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        results[name] = json.loads(out)['results']
    return results


def texts_and_confidences(results: Sequence[Dict[str, Any]]) -> List[Tuple[str, float]]:
    return [(r['text'], r['confidence']) for r in results]


@pytest.fixture(scope='module')
def server() -> Iterator[str]:
    # A long wait makes concurrent requests meet in one forward pass reliably on a loaded machine.
    with start_server('clip4str-tiny', '--max_wait_ms', '300', *LIMITS) as url:
        yield url


def test_health_and_info(server):
    status, health = request(server + '/health')
    assert status == 200 and health['status'] == 'ok'
    status, info = request(server + '/info')
    assert status == 200
    assert info['model'] == 'clip4str-tiny' and info['backend'] == 'pytorch' and info['device'] == 'cpu'
    assert info['image_size'] == [32, 128] and info['charset_train'] == '0123456789abcdefghijklmnopqrstuvwxyz'
    assert info['decoding'] == {'refine_iters': 1, 'decode': 'ar', 'per_request': True}
    assert info['limits'] == {'max_images': 4, 'max_bytes': 200000, 'max_pixels': 1000000, 'max_refine_iters': 4}
    assert info['version']


def test_results_equal_read_py(server, read_py):
    # One image a request is a forward pass of one, as read.py --batch_size 1 (the cross-modal branch decodes as
    # many steps as the longest prediction of a batch, so the batch matters to the confidences).
    singles = [post_files(server, [png(p)]) for p in IMAGES]
    assert all(status == 200 for status, _ in singles)
    results = [body['results'][0] for _, body in singles]
    assert texts_and_confidences(results) == texts_and_confidences(read_py['single'])
    # All in one request: one forward pass of all, as read.py's default batch.
    status, body = post_files(server, [png(p) for p in IMAGES])
    assert status == 200 and [r['batch_size'] for r in body['results']] == [len(IMAGES)] * len(IMAGES)
    assert texts_and_confidences(body['results']) == texts_and_confidences(read_py['batch'])
    for r in body['results']:
        assert ''.join(c['char'] for c in r['characters']) == r['text']
        assert all(0 < c['confidence'] <= 1 for c in r['characters'])
        assert r['confidence'] <= min(c['confidence'] for c in r['characters']) + 1e-6
        assert set(r['time_ms']) == {'decode', 'wait', 'inference', 'request'}
    # The same images as base64 JSON (a data: URL prefix is accepted, as browsers make them).
    payload = {'images': [base64.b64encode(p.read_bytes()).decode() for p in IMAGES]}
    payload['images'][0] = 'data:image/png;base64,' + payload['images'][0]
    status, body_json = request(server + '/read', json.dumps(payload).encode(), 'application/json')
    assert status == 200
    assert texts_and_confidences(body_json['results']) == texts_and_confidences(body['results'])


def test_decoding_options_per_request(server, read_py):
    status, body = post_files(server, [png(IMAGES[0])], '?refine_iters=0&decode=nar')
    assert status == 200
    expected = read_py['nar0'][0]
    assert texts_and_confidences(body['results']) == texts_and_confidences([expected])
    for query, message in [
        ('?refine_iters=5', 'refine_iters must be an integer from 0 to 4'),
        ('?refine_iters=-1', 'refine_iters must be an integer'),
        ('?decode=beam', 'decode must be ar or nar'),
        ('?second_look=2', 'second_look must be a confidence from 0 to 1'),
        ('?second_look=high', "second_look must be a confidence from 0 to 1 (got 'high')"),
        ('?beam_width=3', "unknown query parameters ['beam_width']"),
    ]:
        status, body = post_files(server, [png(IMAGES[0])], query)
        assert status == 400 and message in body['error'], (query, body)


def test_second_look_per_request(server, read_py):
    # All images in one request, as read.py's default batch reads them: the same readings, characters and all.
    status, body = post_files(server, [png(p) for p in IMAGES], '?second_look=0.95')
    assert status == 200
    assert texts_and_confidences(body['results']) == texts_and_confidences(read_py['second_look'])
    assert texts_and_confidences(body['results']) != texts_and_confidences(read_py['batch'])  # some read again
    for r in body['results']:
        assert ''.join(c['char'] for c in r['characters']) == r['text']
        assert r['confidence'] <= min(c['confidence'] for c in r['characters']) + 1e-6


def _bad_requests() -> Dict[str, Tuple[bytes, str, int, str]]:
    """name: (body, content type, expected status, part of the error)."""
    good = IMAGES[0].read_bytes()
    buf = io.BytesIO()
    # 36 M pixels that compress to a few kB: refused from the header, never decoded.
    Image.new('L', (6000, 6000)).save(buf, 'PNG')
    bomb = buf.getvalue()
    assert len(bomb) < 200000
    noise = io.BytesIO()
    Image.frombytes('L', (400, 600), os.urandom(240000)).save(noise, 'PNG')
    cases = {
        'non-image': ([('notes.txt', b'hello, not an image\n', 'text/plain')], 400, 'notes.txt: not an image'),
        'truncated': ([('cut.png', good[: len(good) // 2], 'image/png')], 400, 'cut.png: cannot decode image'),
        'empty': ([('empty.png', b'', 'image/png')], 400, 'empty.png: empty upload (0 bytes)'),
        'bomb': ([('bomb.png', bomb, 'image/png')], 413, 'bomb.png: image of 6000x6000 pixels is over the limit'),
        'too many images': ([png(IMAGES[0])] * 5, 413, '5 images in one request, over the limit of 4'),
        'too many bytes': ([('noise.png', noise.getvalue(), 'image/png')], 413, 'over the limit of 200000 bytes'),
    }
    out = {name: (*multipart(files), status, error) for name, (files, status, error) in cases.items()}
    out['wrong content type'] = (good, 'image/png', 415, "content type 'image/png'")
    out['other field'] = (*multipart([png(IMAGES[0])], field='image'), 400, "unexpected form field 'image'")
    out['no images'] = (*multipart([]), 400, 'no images')
    out['malformed multipart'] = (b'xx', 'multipart/form-data', 400, 'malformed multipart body')
    out['bad JSON'] = (b'{"images": [', 'application/json', 400, 'invalid JSON')
    out['bad base64'] = (b'{"images": ["not base64!"]}', 'application/json', 400, 'images[0]: not valid base64')
    out['JSON not a list'] = (b'{"images": "abc"}', 'application/json', 400, 'JSON body must be an object')
    return out


def test_bad_input_is_refused_while_others_are_served(server):
    expected = post_files(server, [png(IMAGES[1])])[1]['results'][0]['text']
    bad = _bad_requests()
    with ThreadPoolExecutor(8) as pool:
        refused = {
            name: pool.submit(request, server + '/read', body, ctype) for name, (body, ctype, _, _) in bad.items()
        }
        good = [pool.submit(post_files, server, [png(IMAGES[1])]) for _ in range(4)]
        for name, (_, _, status, error) in bad.items():
            got_status, got = refused[name].result()
            assert got_status == status and error in got['error'], (name, got_status, got)
        for future in good:
            status, body = future.result()
            assert status == 200 and body['results'][0]['text'] == expected
    assert request(server + '/health')[1]['status'] == 'ok'


def test_concurrent_requests_share_forward_passes(server):
    before = request(server + '/health')[1]
    n = 8
    with ThreadPoolExecutor(n) as pool:
        answers = list(pool.map(lambda i: post_files(server, [png(IMAGES[i % len(IMAGES)])]), range(n)))
    after = request(server + '/health')[1]
    assert all(status == 200 for status, _ in answers)
    assert after['images'] - before['images'] == n
    passes = after['forward_passes'] - before['forward_passes']
    assert passes < n, f'{n} concurrent requests took {passes} forward passes'
    assert max(body['results'][0]['batch_size'] for _, body in answers) > 1


def test_onnx_export_options_are_fixed(tmp_path, read_py):
    pytest.importorskip('onnxruntime', reason="the onnx extra is not installed: pip install -e '.[onnx]'")
    onnx = tmp_path / 'tiny.onnx'
    subprocess.run(
        [sys.executable, str(REPO / 'tools' / 'export.py'), 'clip4str-tiny', '--output', str(onnx)],
        check=True,
        capture_output=True,
    )
    with start_server(str(onnx)) as url:
        assert request(url + '/info')[1]['backend'] == 'onnxruntime'
        status, body = post_files(url, [png(p) for p in IMAGES])
        assert status == 200
        assert [r['text'] for r in body['results']] == [r['text'] for r in read_py['batch']]
        status, body = post_files(url, [png(IMAGES[0])], '?refine_iters=0')
        assert status == 400 and 'refine_iters: fixed when the ONNX model was exported' in body['error']
        status, body = post_files(url, [png(IMAGES[0])], '?second_look=0.9')
        assert status == 400 and "second_look: needs the decoders' attention" in body['error']


def test_cli_errors():
    run = [sys.executable, str(REPO / 'tools' / 'serve.py')]
    out = subprocess.run([*run, 'clip4str-tiny', '--max_pixels', '0'], capture_output=True, text=True)
    assert out.returncode == 2 and 'serve.py: error: --max_pixels must be >= 1' in out.stderr
    out = subprocess.run([*run, 'no-such-model'], capture_output=True, text=True)
    assert out.returncode == 2 and 'serve.py: error: checkpoint not found: no-such-model' in out.stderr
    out = subprocess.run([*run, '--help'], capture_output=True, text=True)
    assert out.returncode == 0 and '(default: 127.0.0.1)' in out.stdout
