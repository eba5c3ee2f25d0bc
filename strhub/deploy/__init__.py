"""Running CLIP4STR outside PyTorch: export to ONNX (:mod:`.onnx_export`) and inference with onnxruntime
(:mod:`.onnx_runtime`).

Exported models are read by ``strhub.TextReader('model.onnx')`` and ``tools/read.py model.onnx IMAGES...``. Both
modules are imported on use: onnx and onnxruntime are optional (``pip install -e '.[onnx]'``).
"""

from strhub.deploy.onnx_format import OnnxModelError

__all__ = ['OnnxModelError']
