"""The FastAPI app: ``POST /read``, ``GET /health``, ``GET /info`` and the page at ``/``."""

import base64
import binascii
import json
import math
import re
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from strhub import __version__
from strhub.read import TextReader
from strhub.serve.batcher import DynamicBatcher, Options
from strhub.serve.limits import Limits, RequestError, decode_image

_PAGE = Path(__file__).parent / 'static' / 'index.html'
_DATA_URL = re.compile(r'^data:[^,]*;base64,', re.I)
_QUERY = ('refine_iters', 'decode', 'second_look')


def _json_error(status: int, message: str) -> JSONResponse:
    return JSONResponse({'error': message}, status_code=status)


async def _read_body(request: Request, max_bytes: int) -> bytes:
    """The body, refused (413) as soon as it is known to be over ``max_bytes``: from Content-Length before reading,
    else while streaming (chunked uploads)."""
    too_big = RequestError(413, f'request body over the limit of {max_bytes} bytes (max_bytes)')
    length = request.headers.get('content-length')
    if length is not None and length.isdigit() and int(length) > max_bytes:
        raise too_big
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise too_big
        chunks.append(chunk)
    return b''.join(chunks)


async def _multipart_images(request: Request, body: bytes) -> List[Tuple[str, bytes]]:
    async def receive() -> Dict[str, Any]:  # replays the body already read (and size-checked)
        return {'type': 'http.request', 'body': body, 'more_body': False}

    try:
        form = await Request(request.scope, receive).form(max_part_size=len(body) + 1)
    except HTTPException as e:  # Starlette's report of a malformed body
        raise RequestError(400, f'malformed multipart body: {e.detail}') from None
    images = []
    try:
        for i, (key, value) in enumerate(form.multi_items()):
            if key != 'files':
                raise RequestError(400, f'unexpected form field {key!r}: send images as fields named "files"')
            if isinstance(value, str):
                raise RequestError(400, f'form field files #{i} is text, not a file upload')
            images.append((value.filename or f'files[{i}]', await value.read()))
    finally:
        await form.close()
    return images


def _json_images(body: bytes) -> List[Tuple[str, bytes]]:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise RequestError(400, f'invalid JSON: {e}') from None
    if not isinstance(data, dict) or not isinstance(data.get('images'), list):
        raise RequestError(400, 'JSON body must be an object {"images": [base64 strings]}')
    unknown = sorted(set(data) - {'images'})
    if unknown:
        raise RequestError(400, f'unexpected JSON keys {unknown}: only "images"')
    images = []
    for i, item in enumerate(data['images']):
        name = f'images[{i}]'
        if not isinstance(item, str):
            raise RequestError(400, f'{name}: expected a base64 string, got {type(item).__name__}')
        try:
            images.append((name, base64.b64decode(_DATA_URL.sub('', item), validate=True)))
        except (binascii.Error, ValueError):
            raise RequestError(400, f'{name}: not valid base64') from None
    return images


def _options(request: Request, batcher: DynamicBatcher, limits: Limits) -> Options:
    params = request.query_params
    unknown = sorted(set(params) - set(_QUERY))
    if unknown:
        raise RequestError(400, f'unknown query parameters {unknown}: only {list(_QUERY)}')
    if 'second_look' in params and batcher.reader.onnx is not None:
        raise RequestError(400, "second_look: needs the decoders' attention, which an ONNX model does not give")
    given = [k for k in _QUERY if k in params]
    if given and batcher.reader.onnx is not None:
        raise RequestError(
            400,
            f'{", ".join(given)}: fixed when the ONNX model was exported (refine_iters='
            f'{batcher.defaults.refine_iters}, decode={"ar" if batcher.defaults.decode_ar else "nar"}); re-export it '
            'with tools/export.py to change them',
        )
    refine_iters = decode_ar = None
    if 'refine_iters' in params:
        value = params['refine_iters']
        if not value.isdigit() or int(value) > limits.max_refine_iters:
            raise RequestError(
                400, f'refine_iters must be an integer from 0 to {limits.max_refine_iters} (got {value!r})'
            )
        refine_iters = int(value)
    if 'decode' in params:
        if params['decode'] not in ('ar', 'nar'):
            raise RequestError(400, f'decode must be ar or nar (got {params["decode"]!r})')
        decode_ar = params['decode'] == 'ar'
    second_look = None
    if 'second_look' in params:
        value = params['second_look']
        try:
            second_look = float(value)
        except ValueError:
            second_look = math.nan
        if not 0 <= second_look <= 1:
            raise RequestError(400, f'second_look must be a confidence from 0 to 1 (got {value!r})')
    return Options(refine_iters, decode_ar, second_look)


def _charsets(reader: TextReader) -> Tuple[str, str]:
    if reader.onnx is not None:
        return reader.onnx.config['charset_train'], reader.onnx.config['charset_test']
    return reader.system.hparams.charset_train, reader.system.charset_test


def create_app(
    reader: TextReader,
    limits: Limits = Limits(),
    max_batch_size: int = 32,
    max_wait_ms: float = 5.0,
    model_name: Optional[str] = None,
) -> FastAPI:
    """The service over ``reader``.

    Args:
        reader: the model; its ``batch_size`` is not used (the batcher's ``max_batch_size`` is).
        limits: what one request may ask for.
        max_batch_size: images per forward pass.
        max_wait_ms: how long the first image of a pass waits for others.
        model_name: shown by ``/info`` (the checkpoint's name or path).
    """
    batcher = DynamicBatcher(reader, max_batch_size, max_wait_ms)
    charset_train, charset_test = _charsets(reader)
    stats = {'requests': 0, 'refused': 0}
    page = _PAGE.read_text(encoding='utf-8')

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title='strhub text recognition', version=__version__, lifespan=lifespan)
    app.state.batcher = batcher

    @app.exception_handler(RequestError)
    async def refused(_: Request, e: RequestError) -> JSONResponse:
        stats['refused'] += 1
        return _json_error(e.status, e.message)

    @app.get('/', response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get('/health')
    async def health() -> Dict[str, Any]:
        """Liveness, and the counters that show the batching (images per forward pass)."""
        return {'status': 'ok', 'forward_passes': batcher.forward_passes, 'images': batcher.images, **stats}

    @app.get('/info')
    async def info() -> Dict[str, Any]:
        defaults = batcher.defaults
        return {
            'model': model_name,
            'backend': 'pytorch' if reader.onnx is None else 'onnxruntime',
            'device': str(reader.device),
            'precision': reader.precision,
            'image_size': list(reader.img_size),
            'charset_train': charset_train,
            'charset_test': charset_test,
            'decoding': {
                'refine_iters': defaults.refine_iters,
                'decode': 'ar' if defaults.decode_ar else 'nar',
                'per_request': reader.onnx is None,  # an ONNX export's were fixed when it was exported
            },
            'limits': limits.as_dict(),
            'batching': {'max_batch_size': max_batch_size, 'max_wait_ms': max_wait_ms},
            'version': __version__,
        }

    @app.post('/read')
    async def read(request: Request) -> Dict[str, Any]:
        """Images as multipart fields named ``files`` or JSON ``{"images": [base64, ...]}``; query parameters
        ``refine_iters``, ``decode`` (ar|nar) and ``second_look`` (read the words under this confidence again)."""
        start = time.perf_counter()
        options = _options(request, batcher, limits)
        content_type = request.headers.get('content-type', '').split(';')[0].strip().lower()
        if content_type not in ('multipart/form-data', 'application/json'):
            raise RequestError(
                415, f'content type {content_type or "(none)"!r}: send multipart/form-data or application/json'
            )
        body = await _read_body(request, limits.max_bytes)
        if content_type == 'multipart/form-data':
            uploads = await _multipart_images(request, body)
        else:
            uploads = _json_images(body)
        if not uploads:
            raise RequestError(400, 'no images: send multipart fields named "files" or JSON {"images": [...]}')
        if len(uploads) > limits.max_images:
            raise RequestError(
                413, f'{len(uploads)} images in one request, over the limit of {limits.max_images} (max_images)'
            )

        def preprocess(name: str, data: bytes):
            t = time.perf_counter()
            image = decode_image(data, name, limits, reader.exif)
            if options.second_look is None:  # with a second look the batcher cuts views from the image itself
                image = reader.transform(image)
            return image, time.perf_counter() - t

        prepared = [await run_in_threadpool(preprocess, name, data) for name, data in uploads]
        readings = await batcher.read([image for image, _ in prepared], options)
        stats['requests'] += 1
        total_ms = (time.perf_counter() - start) * 1000
        return {
            'results': [
                {
                    'name': name,
                    'text': r.text,
                    'confidence': r.confidence,
                    'characters': [{'char': c, 'confidence': p} for c, p in r.chars],
                    'batch_size': r.batch_size,
                    'time_ms': {
                        'decode': round(decode_s * 1000, 3),
                        'wait': round(r.wait_s * 1000, 3),
                        'inference': round(r.inference_s * 1000, 3),
                        'request': round(total_ms, 3),
                    },
                }
                for (name, _), (_, decode_s), r in zip(uploads, prepared, readings)
            ]
        }

    return app
