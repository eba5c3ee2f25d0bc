"""The models a checkpoint can hold, by the name it records (``checkpoint['system']``).

Each entry says how to recognise the system's checkpoints that record no name (the original's releases, by their
keys), how to map their weights to our names, and how to get its constructor arguments. A new model adds one entry.
"""

from dataclasses import dataclass
from typing import Any, Callable, Dict, Type

import pytorch_lightning as pl
from torch import Tensor

from strhub.models.clip4str import loading as clip4str_loading
from strhub.models.clip4str.system import SYSTEM_NAME as CLIP4STR, CLIP4STRSystem


@dataclass(frozen=True)
class System:
    cls: Type[pl.LightningModule]
    recognise: Callable[[Dict[str, Any], Dict[str, Tensor]], bool]
    state_dict: Callable[[Dict[str, Tensor]], Dict[str, Tensor]]
    hparams: Callable[[Dict[str, Any], Dict[str, Tensor], str], Dict[str, Any]]


SYSTEMS: Dict[str, System] = {
    CLIP4STR: System(CLIP4STRSystem, clip4str_loading.recognise, clip4str_loading.state_dict, clip4str_loading.hparams),
    # The original's STR-Adapter releases; ours are CLIP4STR checkpoints with an adapter_type.
    'str_adapter': System(
        CLIP4STRSystem,
        clip4str_loading.recognise_adapter,
        clip4str_loading.adapter_state_dict,
        clip4str_loading.adapter_hparams,
    ),
}
