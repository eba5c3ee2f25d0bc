"""What one request may ask of the server, and the decoding of uploaded images within those limits."""

import io
from dataclasses import asdict, dataclass
from typing import Any, Dict

from PIL import Image


@dataclass(frozen=True)
class Limits:
    """Per-request limits; a request over one is refused with a 4xx before any inference.

    Attributes:
        max_images: images in one request.
        max_bytes: bytes of one request body (the encoded images, plus multipart framing or base64's third).
        max_pixels: width x height of one image, checked from its header before the pixels are decoded, so a small
            file that would decode to gigabytes (a decompression bomb) costs nothing.
        max_refine_iters: the largest ``refine_iters`` a request may ask for (each iteration is another pass of the
            cross-modal branch over the batch).
    """

    max_images: int = 16
    max_bytes: int = 16 * 2**20
    max_pixels: int = 4096 * 4096
    max_refine_iters: int = 4

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if value < (0 if name == 'max_refine_iters' else 1):
                raise ValueError(f'{name} must be >= {0 if name == "max_refine_iters" else 1} (got {value})')

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)


class RequestError(Exception):
    """A request the server refuses: ``status`` (4xx) and a message naming the problem, sent as ``{"error": ...}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def decode_image(data: bytes, name: str, limits: Limits, exif: bool = True) -> Image.Image:
    """Encoded bytes to an 8-bit RGB image (as :func:`strhub.read.load_image`), refusing what is over the limits.

    Raises:
        RequestError: 400 for an empty upload, a non-image or a corrupt or truncated file; 413 for an image over
            ``limits.max_pixels``.
    """
    from strhub.read import ImageReadError, to_rgb  # torch: imported when serving, not for tools/serve.py --help

    if not data:
        raise RequestError(400, f'{name}: empty upload (0 bytes)')
    try:
        # Pillow's own bomb check (MAX_IMAGE_PIXELS) is process-wide and only warns below twice its limit; the
        # header's size is checked here instead, before load() decodes anything.
        with Image.open(io.BytesIO(data)) as img:
            if img.width * img.height > limits.max_pixels:
                raise RequestError(
                    413,
                    f'{name}: image of {img.width}x{img.height} pixels is over the limit of {limits.max_pixels} '
                    'pixels (max_pixels)',
                )
            return to_rgb(img, exif)
    except Image.UnidentifiedImageError:
        raise RequestError(400, f'{name}: not an image (unrecognised format)') from None
    except Image.DecompressionBombError as e:
        raise RequestError(413, f'{name}: {e}') from None
    except ImageReadError as e:  # truncated or corrupt pixel data, zero width or height
        raise RequestError(400, f'{name}: {e}') from None
    except (OSError, ValueError, SyntaxError) as e:
        raise RequestError(400, f'{name}: cannot decode image: {type(e).__name__}: {e}') from None
