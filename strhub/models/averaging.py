"""Weight-space averages of checkpoints of one network: a fine-tuned model blended with the checkpoint it started
from (WiSE-FT, Wortsman et al. 2022: most of what fine-tuning taught, with what the start read before it), the last
snapshots of a run, or a soup of runs from one start. Blending only makes sense between checkpoints that share a
start: two networks trained apart from random weights do not line up unit for unit."""

from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from strhub.models.checkpoint import (
    OPENAI_MEANSTD_KEY,
    read_checkpoint,
    system_of,
    trained_with_openai_meanstd,
    write_inference_checkpoint,
)
from strhub.models.errors import CheckpointError

__all__ = ['Blend', 'WeightsError', 'average_checkpoints']


class WeightsError(ValueError):
    """Fewer than two checkpoints, or blend weights that are not one per checkpoint, >= 0, summing to 1."""


class Blend(NamedTuple):
    """What :func:`average_checkpoints` wrote."""

    path: Path
    weights: List[float]  # one per checkpoint, as used (equal where none were given)
    differing: Dict[str, Tuple[object, object]]  # hyper-parameters (or openai_meanstd) where a later one differs


def _check_weights(n: int, weights: Optional[Sequence[float]]) -> List[float]:
    if n < 2:
        raise WeightsError(f'averaging needs two checkpoints or more (got {n})')
    if weights is None:
        return [1 / n] * n
    weights = [float(w) for w in weights]
    if len(weights) != n:
        raise WeightsError(f'{len(weights)} weights for {n} checkpoints: give one per checkpoint')
    if any(not w >= 0 for w in weights) or abs(sum(weights) - 1) > 1e-6:
        raise WeightsError(f'weights must be >= 0 and sum to 1 (got {", ".join(map(str, weights))})')
    return weights


def _names(keys: Sequence[str]) -> str:
    return ', '.join(sorted(keys)[:5]) + (f' and {len(keys) - 5} more' if len(keys) > 5 else '')


def average_checkpoints(
    srcs: Sequence[Union[str, Path]],
    dst: Union[str, Path],
    weights: Optional[Sequence[float]] = None,
    half: bool = True,
    trust: bool = False,
) -> Blend:
    """Writes to ``dst`` the inference checkpoint (as :func:`~strhub.models.checkpoint.export_checkpoint` writes
    it) whose weights are ``sum(w_i * weights of srcs[i])``, computed in float64, and whose hyper-parameters are
    those of ``srcs[0]``.

    Args:
        srcs: two checkpoints or more of one model (paths, or shipped model names).
        weights: one per checkpoint, >= 0, summing to 1 (default: equal).
        half: write float16 weights (else float32).
        trust: the files are trusted (see :func:`~strhub.models.checkpoint.read_checkpoint`).

    Returns:
        The path written, the weights used, and the hyper-parameters in which a later checkpoint differs from the first
        (name: (first value, other value)), e.g. the learning rate of a fine-tuning run.

    Raises:
        WeightsError: fewer than two checkpoints, or bad weights.
        CheckpointError: a file cannot be read or written, or the checkpoints are not of one network: another model,
            other weight names or shapes, another training charset (the rows of the head would stand for other
            characters), or integer buffers that differ.
    """
    weights = _check_weights(len(srcs), weights)
    first = str(srcs[0])
    ckpt = read_checkpoint(srcs[0], trust)
    system, sd = system_of(ckpt, first)
    hparams = system.hparams(ckpt, sd, first)
    openai_meanstd = trained_with_openai_meanstd(ckpt, first)  # the first's, as its hyper-parameters
    total = {k: v.double() * weights[0] if v.is_floating_point() else v for k, v in sd.items()}
    differing: Dict[str, Tuple[object, object]] = {}
    for src, w in zip(srcs[1:], weights[1:]):
        source = str(src)
        ckpt = read_checkpoint(src, trust)
        other, sd = system_of(ckpt, source)
        if other is not system:
            raise CheckpointError(f'{source} holds another model than {first}: only one network can be averaged')
        hp = other.hparams(ckpt, sd, source)
        if hp.get('charset_train') != hparams.get('charset_train'):
            raise CheckpointError(
                f'{source} was trained on another charset than {first} ({hp.get("charset_train")!r} against '
                f'{hparams.get("charset_train")!r}): the rows of their heads stand for other characters'
            )
        differing.update(
            {k: (hparams.get(k), hp.get(k)) for k in set(hparams) | set(hp) if hparams.get(k) != hp.get(k)}
        )
        if trained_with_openai_meanstd(ckpt, source) != openai_meanstd:
            differing[OPENAI_MEANSTD_KEY] = (openai_meanstd, not openai_meanstd)
        missing, extra = set(total) - set(sd), set(sd) - set(total)
        if missing or extra:
            raise CheckpointError(
                f'{source} and {first} hold other weights: '
                + '; '.join(
                    f'{label} {_names(list(keys))}' for label, keys in (('missing', missing), ('extra', extra)) if keys
                )
            )
        for k, v in sd.items():
            ref: Tensor = total[k]
            if v.shape != ref.shape:
                raise CheckpointError(f'{k} is {tuple(ref.shape)} in {first} but {tuple(v.shape)} in {source}')
            if v.is_floating_point() and ref.is_floating_point():
                total[k] = ref + w * v.double()
            elif v.is_floating_point() or ref.is_floating_point() or not torch.equal(v, ref):
                raise CheckpointError(f'{k} (not floating point) differs between {first} and {source}: not averageable')
    return Blend(write_inference_checkpoint(system, total, hparams, dst, half, openai_meanstd), weights, differing)
