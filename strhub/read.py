"""Reading text from images with a trained checkpoint or its ONNX export: the Python side of ``tools/read.py``
(spec §8.3).

Example::

    from strhub import TextReader

    reader = TextReader('clip4str_base.ckpt', device='auto', batch_size=32)
    for text, confidence in reader.read(['a.jpg', 'b.png']):
        print(text, confidence)

A ``.onnx`` file (``tools/export.py``) runs on onnxruntime instead of PyTorch, with the same results.

Predictions are the raw output of the model over its full training charset (case and punctuation kept), as the
original ``read.py`` prints them; ``adapt_charset=True`` maps them onto the test charset (e.g. lower-case
alphanumerics) the way evaluation does. The model's ``charset_test`` (as saved in the checkpoint unless
overridden) also shapes the caption of the cross-modal branch, so it can change predictions, as in the original.
"""

import io
import os
from typing import Any, Callable, Iterable, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor

from strhub.data.transforms import get_transform
from strhub.deploy.onnx_format import OnnxModelError, is_onnx_path
from strhub.device import autocast, select_device
from strhub.models.second_look import SecondLookOptions, check_second_look, read_with_second_look, tensor_to_image

__all__ = ['ImageReadError', 'Reading', 'TextReader', 'load_image', 'to_rgb']

ImageInput = Union[str, os.PathLike, bytes, Image.Image, np.ndarray, Tensor]


class Reading(NamedTuple):
    """One prediction: the text and its confidence (product of the per-character probabilities and the [E] one)."""

    text: str
    confidence: float


class ImageReadError(ValueError):
    """An input that is not a readable image (missing, corrupt, unsupported type or shape)."""


def _alpha_on_white(img: Image.Image) -> Image.Image:
    rgba = img.convert('RGBA')
    background = Image.new('RGBA', rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert('RGB')


def _int_to_l(img: Image.Image) -> Image.Image:
    # Integer greyscale scaled to 8 bits by its real range (Pillow's own convert('RGB') clips at 255, which turns
    # most 16-bit images white). I;16* is 16-bit. I (32-bit) holds what convert('I') makes of 8-bit images as well as
    # 16-bit PNGs (older Pillow versions), so its depth is taken from the largest value: 8 bits, 16 bits, else that
    # value is white.
    a = np.asarray(img, dtype=np.float64)
    top = a.max()
    white = 65535.0 if img.mode.startswith('I;16') or 255 < top <= 65535 else max(top, 255.0)
    return Image.fromarray(np.clip(np.rint(a * (255.0 / white)), 0, 255).astype(np.uint8), 'L')


def to_rgb(img: Image.Image, exif: bool = True) -> Image.Image:
    """Any PIL image to 8-bit RGB, as the network expects.

    Deliberate differences from the original's plain ``convert('RGB')``: the EXIF orientation is applied (photos
    from phones are often stored rotated), transparency is composited on white (``convert`` keeps the colour of
    fully transparent pixels, often black, which hides dark text), and integer greyscale is scaled to 8 bits by its
    range instead of being clipped: I;16 as 16-bit, I as 8-bit when no value exceeds 255, else as 16-bit when none
    exceeds 65535, else by its largest value. Every other mode (L, 1, P, CMYK, YCbCr, ...) goes through Pillow's
    ``convert``.

    Args:
        img: the image (loaded lazily or not).
        exif: apply the EXIF orientation tag.

    Raises:
        ImageReadError: the pixels cannot be decoded or converted, or the image has no pixels (zero width or height).
    """
    if img.width == 0 or img.height == 0:  # the resize would turn it into a blank image and "read" text in it
        raise ImageReadError(f'empty image ({img.width}x{img.height} pixels)')
    try:
        img.load()
        if exif:
            img = ImageOps.exif_transpose(img)
        mode = img.mode
        if mode in ('RGBA', 'LA', 'PA', 'RGBa', 'La') or (mode in ('P', 'L', 'RGB') and 'transparency' in img.info):
            return _alpha_on_white(img)
        if mode == 'RGB':
            return img
        if mode.startswith('I;16') or mode == 'I':
            return _int_to_l(img).convert('RGB')
        if mode == 'F':
            return Image.fromarray(np.clip(np.rint(np.asarray(img)), 0, 255).astype(np.uint8), 'L').convert('RGB')
        return img.convert('RGB')
    except (OSError, ValueError, SyntaxError, MemoryError, Image.DecompressionBombError) as e:
        raise ImageReadError(f'cannot decode image: {type(e).__name__}: {e}') from None


def load_image(source: Union[str, os.PathLike, bytes], exif: bool = True) -> Image.Image:
    """Opens an image file (path or encoded bytes) as 8-bit RGB (see :func:`to_rgb`).

    Raises:
        ImageReadError: missing, unreadable or not an image.
    """
    name = '<bytes>' if isinstance(source, bytes) else str(source)
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as img:
            return to_rgb(img, exif)
    except FileNotFoundError:
        raise ImageReadError(f'{name}: file not found') from None
    except IsADirectoryError:
        raise ImageReadError(f'{name}: is a directory') from None
    except Image.UnidentifiedImageError:
        raise ImageReadError(f'{name}: not an image (unrecognised format)') from None
    except ImageReadError as e:
        raise ImageReadError(f'{name}: {e}') from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise ImageReadError(f'{name}: cannot decode image: {type(e).__name__}: {e}') from None


class TextReader:
    """Runs a CLIP4STR checkpoint over images and returns the text read in each.

    Args:
        model: checkpoint path (``.ckpt`` / ``.pt``), ONNX export (``.onnx``, run with onnxruntime: the CUDA
            provider for a CUDA ``device`` when onnxruntime has it, else the CPU) or an already loaded
            ``CLIP4STRSystem``. A given system is used as is (put in eval mode and moved to ``device``);
            ``refine_iters``/``decode_ar`` are then set on it. An ONNX export's options were fixed when it was
            exported: ``refine_iters``, ``decode_ar`` and overrides are refused with it.
        device: ``'auto'`` (CUDA if available), ``'cpu'``, ``'cuda'``, ``'cuda:N'`` or a ``torch.device``.
        batch_size: images per forward pass. The original read.py ran one image at a time; with larger batches the
            output can change slightly, because the model (like the original) runs the cross-modal branch for as many
            steps as the longest visual prediction of the batch: confidences move by a few percent, texts rarely.
        refine_iters: override of the number of refinement iterations (None: the checkpoint's).
        decode_ar: override of autoregressive (True) or single-pass (False) decoding (None: the checkpoint's).
        adapt_charset: map predictions onto the model's ``charset_test`` (case folding, unsupported characters
            removed) as evaluation does; by default the raw prediction is returned, as the original ``read.py``.
        exif: apply EXIF orientation tags of image files / PIL images.
        trust: load a checkpoint that pickles objects other than tensors and plain data, which can run code; only for
            files you trust (see ``strhub.models.load_from_checkpoint``). Only with a path.
        precision: ``'32'`` (float32), ``'bf16-mixed'`` (CUDA, or CPUs with AVX512-BF16 or AMX, where it is faster) or
            ``'16-mixed'`` (CUDA): the forward pass under autocast, the decoding in float32. ONNX exports run in
            float32 only.
        second_look: read the words read with a confidence under 0.9 again from other views of their image (cut to
            the columns the word is in, padded, trimmed) and keep the most confident reading
            (:mod:`strhub.models.second_look`; a ``SecondLookOptions`` sets the threshold). Not in the original: off
            by default. PyTorch models only.
        **overrides: further ``load_from_checkpoint`` overrides (e.g. ``charset_test='...'``); only with a path.

    Raises:
        strhub.models.CheckpointError: the checkpoint cannot be loaded.
        strhub.deploy.OnnxModelError: the ONNX export cannot be used, or options were given with it.
        ImportError: an ONNX export without onnxruntime installed.
        strhub.device.DeviceError: ``device`` does not exist on this machine.
        strhub.device.PrecisionError: ``precision`` is unknown or cannot run on ``device``.
    """

    def __init__(
        self,
        model: Union[str, os.PathLike, torch.nn.Module],
        device: Union[str, torch.device, None] = 'auto',
        batch_size: int = 32,
        refine_iters: Optional[int] = None,
        decode_ar: Optional[bool] = None,
        adapt_charset: bool = False,
        exif: bool = True,
        trust: bool = False,
        precision: str = '32',
        second_look: Union[bool, SecondLookOptions] = False,
        **overrides: Any,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f'batch_size must be >= 1 (got {batch_size})')
        self.device = select_device(device)
        autocast(self.device, precision)  # an unknown or unsupported precision fails now, before loading
        self.precision = precision
        self.onnx, self.system = None, None
        if isinstance(model, (str, os.PathLike)) and is_onnx_path(model):
            from strhub.deploy.onnx_runtime import OnnxRecognizer, onnx_providers

            given = [n for n, v in (('refine_iters', refine_iters), ('decode_ar', decode_ar)) if v is not None]
            if given or overrides:
                raise OnnxModelError(
                    f'{", ".join(given + sorted(overrides))}: fixed when the ONNX model {model} was exported; '
                    f're-export it with the option, e.g. tools/export.py SRC --output {model} refine_iters:int=0'
                )
            if second_look:
                raise OnnxModelError(f"second_look: needs the decoders' attention, which the ONNX model {model} lacks")
            if str(precision) not in ('32', '32-true'):
                raise OnnxModelError(f'precision {precision}: the ONNX model {model} runs in float32')
            self.onnx = OnnxRecognizer(model, onnx_providers(self.device))
            self.img_size: Tuple[int, int] = self.onnx.img_size
        else:
            if isinstance(model, (str, os.PathLike)):
                from strhub.models import load_from_checkpoint

                if refine_iters is not None:
                    overrides['refine_iters'] = refine_iters
                if decode_ar is not None:
                    overrides['decode_ar'] = decode_ar
                model = load_from_checkpoint(model, trust=trust, **overrides)
            else:
                if overrides:
                    raise TypeError(f'overrides {sorted(overrides)} need a checkpoint path, not a loaded model')
                if refine_iters is not None:
                    model.model.refine_iters = refine_iters
                if decode_ar is not None:
                    model.model.decode_ar = decode_ar
            self.system = model.eval().to(self.device)
            self.img_size = tuple(model.hparams.img_size)
        self.batch_size = batch_size
        self.adapt_charset = adapt_charset
        self.exif = exif
        self.second_look = SecondLookOptions() if second_look is True else second_look or None
        if self.second_look is not None:
            check_second_look(self.system)
        # The original's test-time transform: bicubic resize to exactly H x W, ToTensor, Normalize(0.5, 0.5).
        self.transform: Callable[[Image.Image], Tensor] = get_transform(self.img_size)

    def preprocess(self, item: ImageInput) -> Tensor:
        """One input to the (3, H, W) float32 network input.

        Accepted: a file path or encoded bytes; a PIL image of any mode; a uint8 array/tensor holding pixels
        (HW, HWC for NumPy with C in 1/3/4, HW / CHW for torch); or a float tensor (3, H, W) taken as already
        preprocessed (resized to ``img_size`` and normalised with 0.5/0.5).

        Raises:
            ImageReadError: unreadable file, unsupported type, dtype or shape, an image with zero width or height, or
                a float tensor holding NaN or infinite values.
        """
        img = self._image(item)
        return img if isinstance(img, Tensor) else self.transform(img)

    def _image(self, item: ImageInput) -> Union[Image.Image, Tensor]:
        """An input as an RGB image, or a float tensor as the preprocessed network input (checked)."""
        if isinstance(item, (str, os.PathLike, bytes)):
            img = load_image(item, self.exif)
        elif isinstance(item, Image.Image):
            img = to_rgb(item, self.exif)
        elif isinstance(item, Tensor):
            if item.is_floating_point():
                if item.shape != (3, *self.img_size):
                    raise ImageReadError(
                        f'a float tensor must be a preprocessed image of shape (3, {self.img_size[0]}, '
                        f'{self.img_size[1]}), got {tuple(item.shape)}; pass uint8 pixels or a PIL image to resize'
                    )
                if not torch.isfinite(item).all():  # the model would "read" it as ('', nan)
                    raise ImageReadError('float tensor holds NaN or infinite values')
                return item.float()
            if item.dtype != torch.uint8:
                raise ImageReadError(f'unsupported tensor dtype {item.dtype} (use uint8 pixels or float input)')
            if item.ndim == 3 and item.shape[0] in (1, 3, 4):
                item = item.permute(1, 2, 0)
            elif item.ndim != 2:
                raise ImageReadError(f'unsupported uint8 tensor shape {tuple(item.shape)} (use HW or CHW)')
            img = self._from_array(item.cpu().numpy())
        elif isinstance(item, np.ndarray):
            img = self._from_array(item)
        else:
            raise ImageReadError(f'unsupported input type {type(item).__name__}')
        return img

    @staticmethod
    def _from_array(a: np.ndarray) -> Image.Image:
        if a.dtype != np.uint8:
            raise ImageReadError(f'unsupported array dtype {a.dtype} (use uint8 pixels)')
        if a.ndim == 3 and a.shape[2] == 1:
            a = a[:, :, 0]
        if a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (3, 4)):
            mode = 'L' if a.ndim == 2 else 'RGB' if a.shape[2] == 3 else 'RGBA'
            return to_rgb(Image.fromarray(np.ascontiguousarray(a), mode), exif=False)
        raise ImageReadError(f'unsupported array shape {a.shape} (use HW or HWC with C in 1, 3, 4)')

    @torch.inference_mode()
    def read_tensor(self, images: Tensor) -> List[Reading]:
        """Reads a batch of preprocessed images (N, 3, H, W) in one forward pass."""
        backend = self.system if self.onnx is None else self.onnx  # the same three methods
        with autocast(self.device, self.precision):
            logits = backend(images.to(self.device))
        preds, confidences = backend.decode_logits(logits)  # in float32
        if self.adapt_charset:
            preds = [backend.charset_adapter(p) for p in preds]
        return [Reading(t, c) for t, c in zip(preds, confidences)]

    def _read_twice(self, images: List[Union[Image.Image, Tensor]]) -> List[Reading]:
        # A preprocessed float input is all there is of its image: its views are cut from it.
        images = [img if isinstance(img, Image.Image) else tensor_to_image(img) for img in images]
        with autocast(self.device, self.precision):
            preds, probs = read_with_second_look(self.system, images, self.transform, self.second_look)
        confidences = [p.prod().item() for p in probs]
        if self.adapt_charset:
            preds = [self.system.charset_adapter(p) for p in preds]
        return [Reading(t, c) for t, c in zip(preds, confidences)]

    def read_batches(self, inputs: Iterable[ImageInput]) -> Iterator[List[Tuple[int, Union[Reading, ImageReadError]]]]:
        """Reads inputs ``batch_size`` at a time, not stopping at unreadable ones.

        Yields:
            For each batch (in input order), ``(input index, Reading)`` for the images read and
            ``(input index, ImageReadError)`` for the inputs that could not be used.
        """
        pending: List[Tuple[int, Union[Image.Image, Tensor]]] = []
        failed: List[Tuple[int, ImageReadError]] = []
        # With a second look the images are kept: its views are cut from them, not from the resized input.
        load = self._image if self.second_look is not None else self.preprocess
        for i, item in enumerate(inputs):
            try:
                pending.append((i, load(item)))
            except ImageReadError as e:
                failed.append((i, e))
            if len(pending) == self.batch_size:
                yield self._flush(pending, failed)
                pending, failed = [], []
        if pending or failed:
            yield self._flush(pending, failed)

    def _flush(self, pending, failed) -> List[Tuple[int, Union[Reading, ImageReadError]]]:
        out: List[Tuple[int, Union[Reading, ImageReadError]]] = list(failed)
        if pending and self.second_look is not None:
            readings = self._read_twice([img for _, img in pending])
            out += [(i, r) for (i, _), r in zip(pending, readings)]
        elif pending:
            readings = self.read_tensor(torch.stack([t for _, t in pending]))
            out += [(i, r) for (i, _), r in zip(pending, readings)]
        return sorted(out, key=lambda t: t[0])

    def read(self, inputs: Union[ImageInput, Sequence[ImageInput]]) -> List[Reading]:
        """Reads every input; see :meth:`preprocess` for the accepted kinds.

        Args:
            inputs: a list of inputs, a single input (a 3-D tensor or array is one image), or a batch: a 4-D
                tensor (N, 3, H, W) float / (N, C, H, W) uint8, or a 4-D uint8 array (N, H, W, C).

        Returns:
            One ``Reading(text, confidence)`` per input, in order.

        Raises:
            ImageReadError: an input is unreadable, with its index in ``inputs`` (use :meth:`read_batches` to skip
                such inputs).
        """
        if isinstance(inputs, (str, os.PathLike, bytes, Image.Image)):
            inputs = [inputs]
        elif isinstance(inputs, (Tensor, np.ndarray)):
            inputs = list(inputs) if inputs.ndim == 4 else [inputs]
        results: List[Reading] = []
        for batch in self.read_batches(inputs):
            for i, r in batch:
                if isinstance(r, ImageReadError):
                    raise ImageReadError(f'input {i}: {r}') from None
                results.append(r)
        return results

    __call__ = read
