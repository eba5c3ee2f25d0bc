"""Running a model over test sets: what ``tools/test.py`` and ``tools/learning_curve.py`` call."""

import os
import sys
import time
import warnings
from typing import TYPE_CHECKING, Dict, Optional, Sequence, Union

import torch

from ..data.dataset import CorruptRecordWarning, InvalidLmdbError
from ..data.module import SceneTextDataModule
from ..data.transforms import get_transform
from ..device import autocast, select_device
from .metrics import BatchResult, score_predictions
from .report import Evaluation, SetResult

if TYPE_CHECKING:  # strhub.models imports this package: no import cycle at run time
    from ..models.clip4str.clip_refine import ClipRefineOptions
    from ..models.second_look import SecondLookOptions


def evaluate(
    model,
    data_root: str,
    groups: Union[Dict[str, Sequence[str]], Sequence[str]],
    batch_size: int = 512,
    num_workers: int = 4,
    device: Union[str, torch.device, None] = 'auto',
    rotation: int = 0,
    openai_meanstd: bool = False,
    progress: bool = True,
    precision: str = '32',
    clip_refine: Optional['ClipRefineOptions'] = None,
    second_look: Optional['SecondLookOptions'] = None,
) -> Evaluation:
    """Evaluates ``model`` (a loaded recogniser, e.g. from ``strhub.models.load_from_checkpoint``) on test sets
    ``<data_root>/test/<name>``, as the original ``test.py``: the model's test charset and label filter, 0.5/0.5
    normalisation unless ``openai_meanstd``, predictions adapted to the test charset before scoring.

    Every image of a set is decoded first: unreadable records are excluded (neither counted nor scored) and listed
    in the set's ``bad_records``. A set that cannot be opened is left out, with the reason in ``skipped``.

    Args:
        groups: group name -> set names (e.g. from :func:`~strhub.evaluation.plan_test_sets`), or set names alone
            (one group, 'Test').
        device: where to run (``auto``: CUDA when available); the model is moved there.
        progress: a progress bar per set on stderr.
        precision: ``32`` (float32), ``bf16-mixed`` or ``16-mixed`` (CUDA), see :func:`strhub.device.autocast`.
        clip_refine: refine each prediction with the model's CLIP, as the original's ``test.py --clip_refine``
            (:mod:`strhub.models.clip4str.clip_refine`); the draws of every set start from its seed.
        second_look: read the words read with low confidence again from other views of their image
            (:mod:`strhub.models.second_look`, not in the original); not with ``rotation`` or ``clip_refine``.

    Raises:
        ValueError: ``second_look`` with ``rotation`` or ``clip_refine``.
        ValueError: ``second_look`` with a model other than CLIP4STR.
        strhub.device.DeviceError: ``device`` does not exist here.
        strhub.device.PrecisionError: an unknown ``precision``, or one this device cannot run.
    """
    groups = dict(groups) if isinstance(groups, dict) else {'Test': list(groups)}
    if second_look is not None:
        from ..models.second_look import check_second_look, read_with_second_look

        if rotation or clip_refine is not None:
            raise ValueError('second_look: not with rotation or clip_refine')
        check_second_look(model)
    device = select_device(device)
    amp = autocast(device, precision)  # checked before any work
    model = model.to(device).eval()
    hp = model.hparams
    datamodule = SceneTextDataModule(
        data_root,
        '_unused_',
        hp.img_size,
        hp.max_label_length,
        hp.charset_train,
        hp.charset_test,
        batch_size,
        min(num_workers, os.cpu_count() or 1),  # more workers than cores only contend
        False,
        rotation=rotation,
        test_openai_meanstd=openai_meanstd,
    )
    if second_look is not None:
        transform = get_transform(hp.img_size, mean=datamodule.test_mean, std=datamodule.test_std)
    names = list(dict.fromkeys(n for ns in groups.values() for n in ns))
    width = max(map(len, names), default=0)
    sets: Dict[str, SetResult] = {}
    skipped: Dict[str, str] = {}
    if clip_refine is not None:
        from ..models.clip4str.clip_refine import clip_refine as refine
    start = time.perf_counter()
    with torch.inference_mode(), amp:
        for k, name in enumerate(names, 1):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter('ignore', CorruptRecordWarning)  # reported with the results instead
                    loader = datamodule.test_dataloaders([name], images=second_look is not None)[name]
            except (OSError, InvalidLmdbError) as e:
                skipped[name] = f'cannot be read: {e}'
                continue
            res = BatchResult()
            bar = _progress(loader, f'[{k}/{len(names)}] {name:>{width}}', progress)
            if clip_refine is not None:
                generator = torch.Generator().manual_seed(clip_refine.seed)
            for images, labels in bar:
                if second_look is not None:
                    preds, probs = read_with_second_look(model, images, transform, second_look)
                    confidences = [p.prod().item() for p in probs]
                    res += score_predictions([model.charset_adapter(p) for p in preds], confidences, labels)
                    continue
                images = images.to(device, non_blocking=True)
                if clip_refine is None:
                    res += model.eval_batch(images, labels, validation=False)
                else:
                    preds, confidences = refine(model, images, model(images), clip_refine, generator)
                    res += score_predictions(preds, confidences, labels)
            sets[name] = SetResult(res, list(loader.dataset.bad_records))
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - start
    evaluated = {g: [n for n in ns if n in sets] for g, ns in groups.items()}
    return Evaluation({g: ns for g, ns in evaluated.items() if ns}, sets, skipped, elapsed)


def _progress(loader, desc: str, enabled: bool):
    if not enabled:
        return loader
    from tqdm import tqdm

    return tqdm(loader, desc=desc, unit='batch', file=sys.stderr)


__all__ = ['evaluate']
