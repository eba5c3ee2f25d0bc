"""An HTTP recognition service over :class:`strhub.read.TextReader` (``tools/serve.py``): a FastAPI app whose
dynamic batcher gathers concurrent requests into one forward pass, request limits, and a page at ``/``.

Needs the ``serve`` extra (``pip install -e '.[serve]'``: FastAPI, uvicorn, python-multipart).
"""

__all__ = ['CharReading', 'DynamicBatcher', 'Limits', 'Options', 'RequestError', 'create_app']

_HOMES = {
    'create_app': 'app',
    'CharReading': 'batcher',
    'DynamicBatcher': 'batcher',
    'Options': 'batcher',
    'Limits': 'limits',
    'RequestError': 'limits',
}


def __getattr__(name: str):
    # Lazy, as strhub's own: tools/serve.py reads the default limits for --help without importing torch or FastAPI.
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(f'strhub.serve.{_HOMES[name]}'), name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
