"""What the tests share: the command-line tools loaded as modules, the smallest model config."""

import importlib.util
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]
# The tiny experiment made tinier still (one block per tower, width 64), so that a CPU step takes a fraction of a
# second: Hydra overrides of configs/main.yaml.
SMALL_MODEL = [
    '+experiment=clip4str-tiny',
    'model.clip_arch.vision_layers=1',
    'model.clip_arch.text_layers=1',
    'model.clip_arch.vision_width=64',
    'model.clip_arch.text_width=64',
    'model.clip_arch.embed_dim=64',
]


def load_tool(name: str) -> ModuleType:
    """``tools/<name>.py`` as a module (under a name that cannot shadow the standard library's ``test``)."""
    spec = importlib.util.spec_from_file_location(f'_tool_{name}', REPO / 'tools' / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
