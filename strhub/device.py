"""Choosing the device to run a model on (``TextReader``, ``strhub.evaluation.evaluate``)."""

from typing import Union

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
