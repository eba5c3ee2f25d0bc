"""Choosing the device and precision to run a model in (``TextReader``, ``strhub.evaluation.evaluate``)."""

from contextlib import nullcontext
from pathlib import Path
from typing import ContextManager, Dict, Set, Union

import torch


class DeviceError(ValueError):
    """A device that does not exist on this machine, or a string that names no device."""


def select_device(spec: Union[str, torch.device, None] = 'auto') -> torch.device:
    """``auto`` (or None) -> ``cuda`` when available, else ``cpu``; otherwise the named device, checked.

    Unlike the original (default ``cuda``, and an unconditional ``torch.cuda.synchronize()``), everything also runs on
    machines without a GPU.

    Raises:
        DeviceError: unknown device string, or CUDA requested but not available.
    """
    if spec is None or str(spec) == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    try:
        device = torch.device(spec)
    except (RuntimeError, TypeError):
        raise DeviceError(f'invalid device {spec!r} (use auto, cpu, cuda or cuda:N)') from None
    if device.type == 'cuda':
        if not torch.cuda.is_available():
            raise DeviceError(f'device {spec!r} requested but CUDA is not available (use cpu or auto)')
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(f'device {spec!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist')
    return device


PRECISIONS = ('32', 'bf16-mixed', '16-mixed')


class PrecisionError(ValueError):
    """A precision with no name here, or one this device cannot run."""


def cpu_fields() -> Dict[str, str]:
    """The first processor's entries of Linux ``/proc/cpuinfo`` (``model name``, ``flags``, ...); empty elsewhere."""
    fields: Dict[str, str] = {}
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if not line.strip():  # the end of the first processor's block
                break
            key, _, value = line.partition(':')
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields


def cpu_flags() -> Set[str]:
    """The CPU's feature flags (empty where ``/proc/cpuinfo`` does not exist)."""
    return set(cpu_fields().get('flags', '').split())


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 matrix products run natively: CUDA with bf16 support, or a CPU with AVX512-BF16 or AMX (without
    them bf16 is emulated and slower than float32)."""
    if device.type == 'cuda':
        return torch.cuda.is_bf16_supported()
    return bool(cpu_flags() & {'avx512_bf16', 'amx_bf16'})


def autocast(device: torch.device, precision: str = '32') -> ContextManager:
    """The context that runs a forward pass in ``precision``: ``32`` (float32, the default), ``bf16-mixed`` (CPU or
    CUDA) or ``16-mixed`` (CUDA only), Lightning's names.

    Raises:
        PrecisionError: an unknown precision, or 16-mixed off CUDA.
    """
    precision = str(precision)
    if precision in ('32', '32-true'):
        return nullcontext()
    if precision not in PRECISIONS:
        raise PrecisionError(f'unknown precision {precision!r} (one of: {", ".join(PRECISIONS)})')
    if precision == '16-mixed' and device.type != 'cuda':
        raise PrecisionError(f'precision 16-mixed needs a CUDA device, not {device} (use bf16-mixed on CPU)')
    dtype = torch.bfloat16 if precision == 'bf16-mixed' else torch.float16
    return torch.autocast(device.type, dtype=dtype)
