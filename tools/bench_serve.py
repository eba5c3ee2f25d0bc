#!/usr/bin/env python3
"""Load on tools/serve.py (a benchmark, not a test): N concurrent clients for a bounded time against loopback.

    python tools/bench_serve.py clip4str-tiny --clients 16 --duration 20
    python tools/bench_serve.py clip4str-tiny --clients 1 --duration 20 --max_batch_size 1   # one at a time

Starts the server (``tools/serve.py CKPT`` with the batching options given here) on a free loopback port, renders
``--count`` held-out words of the built-in synthetic test sets (encoded as the renderer writes them), then runs ``--clients`` threads, each
posting ``--images_per_request`` images per request over a kept-alive connection, one request after the other, for
``--duration`` seconds after ``--warmup`` seconds of the same load. Reports requests/s, images/s, the latency median
and 99th percentile, the images per forward pass (from ``/health``), and whether every request was answered with 200.
"""

import http.client
import io
import json
import statistics
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, List, Optional

from _bench_measure import cpu_info
from _cli import ArgumentParser, CLIError, run_cli

PROG = 'bench_serve.py'
TOOLS = Path(__file__).resolve().parent


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog=PROG, description='Load benchmark of tools/serve.py over loopback.')
    parser.add_argument('checkpoint', help='what tools/serve.py serves: a checkpoint, .onnx export or shipped name')
    parser.add_argument('--clients', type=int, default=16, help='concurrent clients')
    parser.add_argument('--duration', type=float, default=20.0, help='seconds measured')
    parser.add_argument('--warmup', type=float, default=3.0, help='seconds of load before measuring')
    parser.add_argument('--images_per_request', type=int, default=1, help='images in each request')
    parser.add_argument('--count', type=int, default=64, help='distinct images rendered (reused in turn)')
    parser.add_argument('--seed', type=int, default=4321, help='seed of the rendered words')
    parser.add_argument('--max_batch_size', type=int, default=32, help="the server's")
    parser.add_argument('--max_wait_ms', type=float, default=5.0, help="the server's")
    parser.add_argument('--threads', type=int, default=None, help="the server's CPU threads (default: torch's)")
    parser.add_argument('--out', default=None, help='also write the results as JSON here')
    return parser


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _body(images: List[bytes], start: int, n: int) -> tuple:
    boundary = uuid.uuid4().hex
    out = io.BytesIO()
    for k in range(n):
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{k}"\r\n'.encode())
        out.write(b'Content-Type: application/octet-stream\r\n\r\n' + images[(start + k) % len(images)] + b'\r\n')
    out.write(f'--{boundary}--\r\n'.encode())
    return out.getvalue(), f'multipart/form-data; boundary={boundary}'


def _get(port: int, path: str) -> Dict[str, Any]:
    conn = http.client.HTTPConnection('127.0.0.1', port, timeout=10)
    try:
        conn.request('GET', path)
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()


def _client(port: int, bodies: List[tuple], measure_from: float, end: float, record) -> None:
    conn = http.client.HTTPConnection('127.0.0.1', port, timeout=60)
    i = 0
    while time.perf_counter() < end:
        body, ctype = bodies[i % len(bodies)]
        i += 1
        t = time.perf_counter()
        try:
            conn.request('POST', '/read', body, {'Content-Type': ctype})
            response = conn.getresponse()
            response.read()
            status = response.status
        except (OSError, http.client.HTTPException):
            status = None
            conn.close()
            conn = http.client.HTTPConnection('127.0.0.1', port, timeout=60)
        if t >= measure_from:
            record(status, time.perf_counter() - t)
    conn.close()


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    for name in ('clients', 'images_per_request', 'count', 'max_batch_size'):
        if getattr(args, name) < 1:
            raise CLIError(f'--{name} must be >= 1')
    if args.duration <= 0 or args.warmup < 0:
        raise CLIError('--duration must be > 0 and --warmup >= 0')

    from strhub.data.synthetic import heldout_samples

    images = [data for data, _ in heldout_samples(args.count, args.seed)]  # encoded, as a user's files
    bodies = [_body(images, i * args.images_per_request, args.images_per_request) for i in range(len(images))]

    port = _free_port()
    cmd = [sys.executable, str(TOOLS / 'serve.py'), args.checkpoint, '--port', str(port)]
    cmd += ['--max_batch_size', str(args.max_batch_size), '--max_wait_ms', str(args.max_wait_ms)]
    cmd += ['--max_images', str(max(16, args.images_per_request))]
    if args.threads:
        cmd += ['--threads', str(args.threads)]
    server = subprocess.Popen(cmd)
    try:
        deadline = time.monotonic() + 120
        while True:
            if server.poll() is not None:
                raise CLIError(f'the server exited with {server.returncode}', exit_code=1)
            try:
                info = _get(port, '/info')
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise CLIError('the server did not start within 120 s', exit_code=1) from None
                time.sleep(0.2)
        latencies: List[float] = []
        statuses: Dict[str, int] = {}
        lock = threading.Lock()

        def record(status: Optional[int], latency: float) -> None:
            with lock:
                statuses[str(status)] = statuses.get(str(status), 0) + 1
                if status == 200:
                    latencies.append(latency)

        start = time.perf_counter()
        measure_from, end = start + args.warmup, start + args.warmup + args.duration
        with ThreadPoolExecutor(args.clients) as pool:
            futures = [
                pool.submit(_client, port, bodies[k:] + bodies[:k], measure_from, end, record)
                for k in range(args.clients)
            ]
            time.sleep(args.warmup)
            before = _get(port, '/health')
            for f in futures:
                f.result()
        after = _get(port, '/health')
        elapsed = time.perf_counter() - measure_from
    finally:
        server.terminate()
        server.wait(30)

    answered = statuses.get('200', 0)
    total = sum(statuses.values())
    passes = after['forward_passes'] - before['forward_passes']
    q = statistics.quantiles(latencies, n=100) if len(latencies) >= 2 else [float('nan')] * 99
    result = {
        'checkpoint': args.checkpoint,
        'backend': info['backend'],
        'clients': args.clients,
        'images_per_request': args.images_per_request,
        'max_batch_size': args.max_batch_size,
        'max_wait_ms': args.max_wait_ms,
        'threads': args.threads,
        'duration_s': round(elapsed, 2),
        'requests': total,
        'answered_200': answered,
        'statuses': statuses,
        'requests_per_s': round(answered / elapsed, 1),
        'images_per_s': round(answered * args.images_per_request / elapsed, 1),
        'latency_p50_ms': round(statistics.median(latencies) * 1000, 1) if latencies else None,
        'latency_p99_ms': round(q[98] * 1000, 1),
        'images_per_forward_pass': round((after['images'] - before['images']) / passes, 2) if passes else None,
        'cpu': cpu_info(),
    }
    print(
        f'{args.checkpoint} ({info["backend"]}), {args.clients} clients x {args.images_per_request} image(s) a '
        f'request, max_batch_size {args.max_batch_size}, max_wait_ms {args.max_wait_ms}, {elapsed:.1f} s\n'
        f'  requests/s {result["requests_per_s"]}, images/s {result["images_per_s"]}, latency p50 '
        f'{result["latency_p50_ms"]} ms, p99 {result["latency_p99_ms"]} ms, images per forward pass '
        f'{result["images_per_forward_pass"]}\n'
        f'  answered {answered} of {total} requests with 200' + ('' if answered == total else f': {statuses}')
    )
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + '\n')
    return 0 if answered == total else 1


if __name__ == '__main__':
    run_cli(main, prog=PROG)
