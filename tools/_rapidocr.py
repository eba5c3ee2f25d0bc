"""rapidocr's text recogniser, run in an interpreter of its own (a virtual environment with rapidocr: its pins of
onnxruntime and numpy need not match ours), for the benchmarks that stand our models beside it. Its recogniser alone
runs (no detection, no angle classifier), one image per call, as its API reads a text line."""

import json
import subprocess
import sys
import tempfile
from typing import Any, Dict, List

from _cli import CLIError

# Runs in the rapidocr interpreter: texts, scores and times as JSON on stdout, progress on stderr.
_SCRIPT = r"""
import json, sys, time
from rapidocr import RapidOCR
job = json.load(sys.stdin)
engine = RapidOCR(params={'Global.log_level': 'critical',
                          'EngineConfig.onnxruntime.intra_op_num_threads': job['threads']})
def read(path):
    out = engine(path, use_det=False, use_cls=False, use_rec=True)
    scores = list(out.scores or ())
    return ''.join(out.txts or ()), sum(scores) / len(scores) if scores else 0.0
for path in job['paths'][:job['warmup']]:
    read(path)
texts, scores, times = [], [], []
for i, path in enumerate(job['paths'], 1):
    start = time.perf_counter()
    text, score = read(path)
    times.append(time.perf_counter() - start)
    texts.append(text)
    scores.append(score)
    if job['progress'] and (i % 1000 == 0 or i == len(job['paths'])):
        print(f"rapidocr: {i}/{len(job['paths'])} images", file=sys.stderr, flush=True)
from importlib.metadata import version
print(json.dumps({'texts': texts, 'scores': scores, 'times': times,
                  'version': f"rapidocr {version('rapidocr')}, onnxruntime {version('onnxruntime')}"}))
"""


def run_rapidocr(
    python: str, paths: List[str], threads: int, warmup: int = 0, progress: bool = False
) -> Dict[str, Any]:
    """Reads the image files ``paths`` with rapidocr in interpreter ``python``: ``texts``, ``scores`` (its mean
    per-line confidence, 0..1), ``times`` (seconds per image, after ``warmup`` untimed images) and ``version``."""
    job = {'paths': paths, 'warmup': warmup, 'threads': threads, 'progress': progress}
    # Its output goes through a file: a pipe could fill while its progress is being read from the other.
    with tempfile.TemporaryFile('w+') as out:
        try:
            proc = subprocess.Popen(
                [python, '-c', _SCRIPT], stdin=subprocess.PIPE, stdout=out, stderr=subprocess.PIPE, text=True
            )
        except OSError as e:
            raise CLIError(f'--rapidocr {python}: {e.strerror or e}') from None
        proc.stdin.write(json.dumps(job))
        proc.stdin.close()
        last = 'no output'
        for line in proc.stderr:
            if line.startswith('rapidocr: '):
                print(line, end='', file=sys.stderr, flush=True)
            elif line.strip():
                last = line.strip()
        if proc.wait() != 0:
            raise CLIError(f'--rapidocr {python} failed: {last}')
        out.seek(0)
        return json.loads(out.read().strip().splitlines()[-1])
