"""Image transforms for training and evaluation (spec §3.4, §3.6)."""

from typing import Callable, Sequence, Union

from PIL import Image
from torch import Tensor
from torchvision import transforms as T

# OpenAI CLIP image statistics (RGB), used for training and validation when ``openai_meanstd`` is on.
OPENAI_DATASET_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_DATASET_STD = (0.26862954, 0.26130258, 0.27577711)

Stats = Union[float, Sequence[float]]


class Rotate:
    """Counter-clockwise rotation by a fixed angle with ``expand=True`` (the canvas grows, nothing is cropped).

    A class rather than the original's lambda so that the transform pickles (DataLoader workers under spawn).
    """

    def __init__(self, degrees: float) -> None:
        self.degrees = degrees

    def __call__(self, img: Image.Image) -> Image.Image:
        return img.rotate(self.degrees, expand=True)

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(degrees={self.degrees})'


def get_transform(
    img_size: Sequence[int], augment: bool = False, rotation: float = 0, mean: Stats = 0.5, std: Stats = 0.5
) -> Callable[[Image.Image], Tensor]:
    """[RandAugment] -> [rotation] -> bicubic resize to exactly H x W -> tensor -> normalisation.

    Args:
        img_size: (H, W); the aspect ratio is not kept.
        augment: prepend the training RandAugment (spec §3.5).
        rotation: degrees, counter-clockwise, canvas expanded; 0 disables it.
        mean: scalar or per-channel mean for ``Normalize``. The default 0.5 is what the original's test/read used.
        std: scalar or per-channel std.

    Returns:
        A callable PIL RGB image -> (3, H, W) float32 tensor.
    """
    if len(img_size) != 2:
        raise ValueError(f'img_size must be (H, W), got {img_size!r}')
    transforms = []
    if augment:
        from .augment import rand_augment_transform  # timm is only needed when augmenting

        transforms.append(rand_augment_transform())
    if rotation:
        transforms.append(Rotate(rotation))
    transforms.extend(
        [
            T.Resize(tuple(img_size), T.InterpolationMode.BICUBIC),
            T.ToTensor(),
            T.Normalize(mean, std),
        ]
    )
    return T.Compose(transforms)
