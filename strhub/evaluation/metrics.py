"""The benchmark metrics (spec §8.1): word accuracy, 1 - normalised edit distance, confidence, predicted length."""

import math
from dataclasses import dataclass, fields
from typing import Dict, Sequence

from nltk import edit_distance


@dataclass
class BatchResult:
    """Sums over one batch (or one set, or a group of sets): ``+=`` them, then :meth:`metrics` divides."""

    num_samples: int = 0
    correct: int = 0
    ned: float = 0.0
    confidence: float = 0.0
    label_length: int = 0
    loss: float = 0.0
    loss_numel: int = 0

    def __iadd__(self, other: 'BatchResult') -> 'BatchResult':
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        return self

    def metrics(self) -> Dict[str, float]:
        """Percentages and the mean predicted length; NaN for no samples (the original divides by zero)."""
        n = self.num_samples or math.nan
        return {
            'num_samples': self.num_samples,
            'accuracy': 100 * self.correct / n,
            'one_minus_ned': 100 * (1 - self.ned / n),
            'confidence': 100 * self.confidence / n,
            'label_length': self.label_length / n,
        }


def score_predictions(preds: Sequence[str], confidences: Sequence[float], labels: Sequence[str]) -> BatchResult:
    """Sums for a batch of predictions against their labels; the edit distance is normalised by the longer of the
    two strings (ICDAR 2019)."""
    res = BatchResult(num_samples=len(labels))
    for pred, conf, gt in zip(preds, confidences, labels):
        res.confidence += conf
        res.ned += edit_distance(pred, gt) / max(len(pred), len(gt), 1)
        res.correct += pred == gt
        res.label_length += len(pred)
    return res
