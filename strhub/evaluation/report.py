"""An evaluation's results: per set and per group, as the original's tables, JSON and CSV."""

import csv
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

from ..data.dataset import describe_records
from .metrics import BatchResult

METRICS = ('num_samples', 'num_skipped', 'accuracy', 'one_minus_ned', 'confidence', 'label_length')
_HEADER = '| {:<{w}} | # samples | Accuracy | 1 - NED | Confidence | Label Length |'
_ALIGN = '|:{:-<{w}}:|----------:|---------:|--------:|-----------:|-------------:|'
_SEP = '|-{:-<{w}}-|-----------|----------|---------|------------|--------------|'


@dataclass
class SetResult:
    """One test set: the sums over its evaluated samples and the records excluded as unreadable."""

    result: BatchResult
    bad_records: List[Tuple[str, str]] = field(default_factory=list)  # (key, reason)

    def metrics(self) -> Dict[str, float]:
        return dict(self.result.metrics(), num_skipped=len(self.bad_records))


@dataclass
class Evaluation:
    """What :func:`strhub.evaluation.evaluate` returns."""

    groups: Dict[str, List[str]]  # group -> the names of its evaluated sets
    sets: Dict[str, SetResult]
    skipped: Dict[str, str] = field(default_factory=dict)  # sets not evaluated -> why
    elapsed: float = 0.0  # seconds

    @property
    def total_samples(self) -> int:
        return sum(s.result.num_samples for s in self.sets.values())

    def combined(self, group: str) -> Dict[str, float]:
        """The group's metrics over all its samples (not a mean of the sets' metrics), as the original."""
        total, skipped = BatchResult(), 0
        for name in self.groups[group]:
            total += self.sets[name].result
            skipped += len(self.sets[name].bad_records)
        return dict(total.metrics(), num_skipped=skipped)

    def table(self, group: str) -> str:
        """The original's Markdown table (``print_results_table``): one row per set, then the Combined row."""
        names = self.groups[group]
        w = max([len(n) for n in names] + [len('Dataset'), len('Combined')])

        def row(name: str, m: Dict[str, float]) -> str:
            return (
                f'| {name:<{w}} | {m["num_samples"]:>9} | {m["accuracy"]:>8.2f} | {m["one_minus_ned"]:>7.2f} '
                f'| {m["confidence"]:>10.2f} | {m["label_length"]:>12.2f} |'
            )

        lines = [_HEADER.format('Dataset', w=w), _ALIGN.format('----', w=w)]
        lines += [row(n, self.sets[n].metrics()) for n in names]
        lines += [_SEP.format('----', w=w), row('Combined', self.combined(group))]
        return '\n'.join(lines)

    def report(self) -> str:
        """Every group's title and table, the unreadable records of its sets, then the time line."""
        parts = []
        for group, names in self.groups.items():
            notes = ''.join(
                f'Skipped {len(s.bad_records)} unreadable record(s) of {n} ({s.result.num_samples} evaluated): '
                f'{describe_records(s.bad_records)}\n'
                for n, s in ((n, self.sets[n]) for n in names)
                if s.bad_records
            )
            # The original prints the title, the table, then print('\n') (two line breaks).
            parts.append(f'{group} set:\n{self.table(group)}\n{notes}\n\n')
        total = self.total_samples
        average_ms = self.elapsed * 1000.0 / total if total else math.nan
        # The spec gives this line's wording only; seconds and milliseconds are rounded to 2 decimals here.
        parts.append(f'Time: Total {self.elapsed:.2f}s, Average {average_ms:.2f}ms. Total samples {total}.\n')
        return ''.join(parts)

    def to_dict(self, info: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        """Plain data for JSON (NaN as None), led by ``info`` (what was evaluated, and how)."""
        total = self.total_samples
        return dict(
            info or {},
            sets={
                n: dict(
                    group=g,
                    **_finite(self.sets[n].metrics()),
                    skipped_records=[dict(key=k, reason=r) for k, r in self.sets[n].bad_records],
                )
                for g, names in self.groups.items()
                for n in names
            },
            groups={g: dict(sets=names, combined=_finite(self.combined(g))) for g, names in self.groups.items()},
            skipped=dict(self.skipped),
            time=dict(
                total_s=self.elapsed,
                average_ms=self.elapsed * 1000.0 / total if total else None,
                total_samples=total,
            ),
        )

    def write(self, path: Union[str, os.PathLike], info: Optional[Dict[str, Any]] = None) -> None:
        """Writes the results to ``path``: JSON (:meth:`to_dict`) or, for a ``.csv`` name, one row per set and
        per group's Combined."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix.lower() == '.csv':
            with open(path, 'w', newline='') as f:
                w = csv.writer(f)
                w.writerow(('group', 'dataset') + METRICS)
                for g, names in self.groups.items():
                    for n, m in [(n, self.sets[n].metrics()) for n in names] + [('Combined', self.combined(g))]:
                        w.writerow([g, n] + [m[k] for k in METRICS])
        else:
            path.write_text(json.dumps(self.to_dict(info), indent=2) + '\n')


def _finite(metrics: Dict[str, float]) -> Dict[str, Optional[float]]:
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in metrics.items()}
