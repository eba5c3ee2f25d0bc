"""Evaluation on the scene-text benchmarks: find the test sets, run a model over them, the metrics per set and
combined per group, the original's tables, JSON and CSV.

    from strhub.evaluation import evaluate, plan_test_sets
    from strhub.models import load_from_checkpoint

    groups, missing = plan_test_sets('data/test')
    results = evaluate(load_from_checkpoint('model.ckpt'), 'data', groups)
    print(results.report())
    results.write('results.json')

Validation during training scores batches with the same code (``BatchResult``, ``score_predictions``).
"""

from .metrics import BatchResult, score_predictions
from .report import METRICS, Evaluation, SetResult
from .run import evaluate
from ..data.test_sets import TEST_ALL, TEST_BENCHMARK, TEST_BENCHMARK_SUB, TEST_NEW, find_lmdbs, plan_test_sets

__all__ = [
    'METRICS',
    'TEST_ALL',
    'TEST_BENCHMARK',
    'TEST_BENCHMARK_SUB',
    'TEST_NEW',
    'BatchResult',
    'Evaluation',
    'SetResult',
    'evaluate',
    'find_lmdbs',
    'plan_test_sets',
    'score_predictions',
]
