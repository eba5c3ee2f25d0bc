#!/usr/bin/env python3
"""Serve a CLIP4STR checkpoint or ONNX export over HTTP: the API, and a page at ``/`` to try it in a browser.

    python tools/serve.py CKPT [--host 127.0.0.1] [--port 8000] [--max_batch_size 32] [--max_wait_ms 5]
                          [--max_images 16] [--max_bytes N] [--max_pixels N] [--max_refine_iters 4] [--device auto]

Endpoints: ``POST /read`` (images as multipart fields named ``files``, or JSON ``{"images": [base64, ...]}``;
optional query parameters ``refine_iters`` and ``decode=ar|nar``, not with an ONNX export, whose options were fixed
at export) returns each image's text, confidence, per-character confidences and time spent; ``GET /health``;
``GET /info``. Concurrent requests are gathered into one forward pass of up to ``--max_batch_size`` images, started
``--max_wait_ms`` after its first image at the latest. A request over a limit, or with an image that cannot be
decoded, is answered with a 4xx and ``{"error": "..."}``. Needs the serve extra: ``pip install -e '.[serve]'``.
"""

import sys
from typing import List, Optional

from _cli import ArgumentParser, CLIError, model_overrides, open_reader, resolve_checkpoint, run_cli

PROG = 'serve.py'


def build_parser() -> ArgumentParser:
    from strhub.serve.limits import Limits  # light: PIL and strhub.read's module (torch), no FastAPI

    default = Limits()
    parser = ArgumentParser(prog=PROG, description='Serve a CLIP4STR checkpoint over HTTP (API and a web page).')
    parser.add_argument(
        'checkpoint',
        help='checkpoint file (.ckpt/.pt), ONNX export (.onnx), a training checkpoints/ directory, or a shipped '
        'model: clip4str-tiny',
    )
    parser.add_argument(
        '--host', default='127.0.0.1', help='address to bind (0.0.0.0 exposes the server to the network)'
    )
    parser.add_argument('--port', type=int, default=8000, help='port to bind')
    parser.add_argument('--max_batch_size', type=int, default=32, help='images per forward pass')
    parser.add_argument(
        '--max_wait_ms', type=float, default=5.0, help='how long the first image of a pass waits for others'
    )
    parser.add_argument('--max_images', type=int, default=default.max_images, help='images in one request')
    parser.add_argument('--max_bytes', type=int, default=default.max_bytes, help='bytes of one request body')
    parser.add_argument(
        '--max_pixels',
        type=int,
        default=default.max_pixels,
        help='width x height of one image, checked before decoding (decompression bombs)',
    )
    parser.add_argument(
        '--max_refine_iters', type=int, default=default.max_refine_iters, help='largest refine_iters a request may ask'
    )
    parser.add_argument('--device', default='auto', help='auto (CUDA if available), cpu, cuda or cuda:N')
    parser.add_decoding_options(prefix='default ')
    parser.add_precision_option()
    parser.add_argument(
        '--threads', type=int, default=None, help="CPU threads of PyTorch and onnxruntime (default: torch's)"
    )
    parser.add_trust_option()
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from strhub.serve.limits import Limits

    try:
        limits = Limits(args.max_images, args.max_bytes, args.max_pixels, args.max_refine_iters)
    except ValueError as e:
        raise CLIError(f'--{e}') from None
    if args.max_batch_size < 1:
        raise CLIError('--max_batch_size must be >= 1')
    if args.max_wait_ms < 0:
        raise CLIError('--max_wait_ms must be >= 0')
    if not 0 <= args.port <= 65535:
        raise CLIError(f'--port must be from 0 to 65535 (got {args.port})')
    if args.threads is not None and args.threads < 1:
        raise CLIError('--threads must be >= 1')
    try:
        import uvicorn

        from strhub.serve import create_app
    except ImportError as e:
        raise CLIError(f"{e.name} is not installed: pip install -e '.[serve]'") from None
    kwargs = model_overrides(args.refine_iters, args.decode)
    checkpoint = resolve_checkpoint(args.checkpoint)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)  # before the reader: its ONNX sessions take torch's count
    reader = open_reader(checkpoint, args.trust_checkpoint, kwargs, device=args.device, precision=args.precision)
    app = create_app(reader, limits, args.max_batch_size, args.max_wait_ms, model_name=args.checkpoint)
    print(f'serving {args.checkpoint} on http://{args.host}:{args.port}/', file=sys.stderr, flush=True)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level='warning')
    except SystemExit as e:  # uvicorn exits with 1 when it cannot bind (the reason is logged)
        raise CLIError(f'cannot serve on {args.host}:{args.port}', exit_code=1) from e
    return 0


if __name__ == '__main__':
    run_cli(main, prog=PROG)
