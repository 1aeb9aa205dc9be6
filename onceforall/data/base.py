"""The two kinds of dataset, the data error, and helpers the readers, splits and batches share.

* :class:`ImageDataset`: a small dataset (Fashion-MNIST, CIFAR-10/100) decoded ONCE into a uint8 tensor
  ``(N, C, H, W)`` held in memory, already at the training image size.
* :class:`FolderDataset`: an image folder (ImageNet-style ``root/{train,val}/<class>/<files>``) decoded lazily with
  PIL, one image at a time (:meth:`FolderDataset.load`), optionally in ``torch.utils.data.DataLoader`` workers.

Every missing or malformed file raises :class:`DataError` with one line naming the path and the expected layout.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..core.seeds import derive_seed

__all__ = [
    "DataError",
    "Dataset",
    "FolderDataset",
    "ImageDataset",
    "data_error",
    "eval_short_side",
    "resize_uint8",
    "seeded_generator",
]


class DataError(ValueError):
    """Missing or malformed data (one line: the path and the expected layout)."""


def _one_line(msg: str) -> str:
    return " ".join(msg.split("\n"))


def data_error(msg: str) -> DataError:
    """A :class:`DataError` with ``msg`` on one line."""
    return DataError(_one_line(msg))


def seeded_generator(*parts: object) -> torch.Generator:
    """A torch generator seeded with :func:`~onceforall.core.seeds.derive_seed` of ``parts``."""
    return torch.Generator().manual_seed(derive_seed(*parts))


def resize_uint8(x: torch.Tensor, size: int | tuple[int, int], chunk: int = 2048) -> torch.Tensor:
    """Antialiased bilinear resize of a uint8 (N, C, H, W) tensor to (N, C, size, size) (or ``size`` = (h, w)),
    rounded back to uint8."""
    h, w = (size, size) if isinstance(size, int) else size
    if x.shape[-2] == h and x.shape[-1] == w:
        return x
    out = torch.empty((x.shape[0], x.shape[1], h, w), dtype=torch.uint8)
    for s in range(0, x.shape[0], chunk):
        y = F.interpolate(x[s: s + chunk].float(), size=(h, w), mode="bilinear", align_corners=False,
                          antialias=True)
        out[s: s + chunk] = y.round_().clamp_(0, 255).to(torch.uint8)
    return out


def eval_short_side(resolution: int) -> int:
    """The shorter side an image folder's image is resized to before the center crop at ``resolution``:
    ceil(r / 0.875), as OFA's ImageNet evaluation (``build_valid_transform``) does (256 for 224, 183 for 160)."""
    return math.ceil(resolution / 0.875)


_IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


@dataclass
class ImageDataset:
    """In-memory dataset (small datasets live in memory as tensors)."""

    images: torch.Tensor
    """uint8, (N, C, H, W), contiguous."""
    labels: torch.Tensor
    """int64, (N,)."""
    classes: list[str]
    mean: tuple[float, ...]
    """Per-channel mean of images / 255."""
    std: tuple[float, ...]
    name: str
    steps: list[dict] = field(default_factory=list)
    """How a raw image became a stored one (:mod:`.recipe` steps, e.g. center padding to the stored size)."""

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"images: expected a uint8 (N, C, H, W) tensor, got {self.images.dtype} "
                             f"{tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"labels: expected shape ({self.images.shape[0]},), got {tuple(self.labels.shape)}")
        self.images = self.images.contiguous()
        self.labels = self.labels.to(torch.int64)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_size(self) -> int:
        """Side of the stored images."""
        return int(self.images.shape[-1])

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, indices: torch.Tensor | Sequence[int]) -> ImageDataset:
        idx = torch.as_tensor(indices, dtype=torch.int64)
        return ImageDataset(self.images[idx].contiguous(), self.labels[idx].clone(), list(self.classes),
                            self.mean, self.std, self.name, list(self.steps))

    def load_steps(self, image_size: int) -> list[dict]:
        """The recipe steps (:mod:`.recipe`) from a raw image to a stored one (stored at ``image_size``)."""
        return [dict(s) for s in self.steps]


class FolderDataset:
    """Lazily decoded image folder (ImageNet, ImageNet-100, custom): ``samples`` is a list of (path, label)."""

    in_channels = 3

    def __init__(self, classes: list[str], samples: list[tuple[str, int]], name: str = "imagefolder",
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None):
        self.classes = list(classes)
        self.samples = list(samples)
        self.name = name
        self.mean = tuple(mean) if mean is not None else _IMAGENET_STATS[0]
        self.std = tuple(std) if std is not None else _IMAGENET_STATS[1]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.samples)

    def subset(self, indices: torch.Tensor | Sequence[int]) -> FolderDataset:
        idx = torch.as_tensor(indices, dtype=torch.int64).tolist()
        return FolderDataset(self.classes, [self.samples[i] for i in idx], self.name, self.mean, self.std)

    def load_steps(self, image_size: int) -> list[dict]:
        """The recipe steps (:mod:`.recipe`) of :meth:`load` at evaluation: shorter side, then center crop."""
        return [{"op": "resize_shorter", "size": eval_short_side(image_size)},
                {"op": "center_crop", "size": image_size}]

    def load(self, index: int, image_size: int, train: bool, generator: torch.Generator | None = None,
             hflip: bool = True) -> torch.Tensor:
        """Decode image ``index`` as a uint8 (3, image_size, image_size) tensor.

        train: RandomResizedCrop (scale 0.08..1, ratio 3/4..4/3) and, with ``hflip``, a random horizontal flip,
        all randomness drawn from ``generator``. Eval: resize the shorter side to ceil(image_size / 0.875), then
        center-crop image_size (OFA's ImageNet protocol, torchvision's Resize + CenterCrop).
        """
        from PIL import Image

        if train:
            if generator is None:
                raise ValueError("FolderDataset.load(train=True) needs a generator")
            return self.load_crops(index, (image_size,), generator, hflip)[image_size]
        im = self._open(index)
        width, height = im.size
        bilinear = Image.Resampling.BILINEAR
        short = eval_short_side(image_size)
        if width <= height:
            new_w, new_h = short, int(short * height / width)
        else:
            new_w, new_h = int(short * width / height), short
        im = im.resize((new_w, new_h), bilinear)
        top = int(round((new_h - image_size) / 2.0))
        left = int(round((new_w - image_size) / 2.0))
        im = im.crop((left, top, left + image_size, top + image_size))
        return _to_tensor(im)

    def _open(self, index: int):  # -> PIL.Image.Image (RGB)
        from PIL import Image

        path = self.samples[index][0]
        try:
            with Image.open(path) as src:
                return src.convert("RGB")
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            raise data_error(f"{self.name}: {path} is not a readable image ({type(e).__name__}: {e}); expected "
                             "image files under <root>/{train,val}/<class>/") from None

    def load_crops(self, index: int, sizes: Sequence[int], generator: torch.Generator,
                   hflip: bool = True) -> dict[int, torch.Tensor]:
        """Training crops of image ``index``, one per side in ``sizes`` (uint8 (3, s, s)): ONE RandomResizedCrop
        box (scale 0.08..1, ratio 3/4..4/3) and one flip decision drawn from ``generator``, the box resized
        directly to each size (PIL bilinear), as OFA's MyRandomResizedCrop crops at the active resolution.
        ``load(index, s, True, g)`` is ``load_crops(index, [s], g)[s]``."""
        from PIL import Image

        im = self._open(index)
        width, height = im.size
        i, j, h, w = _random_resized_crop_params(height, width, generator)
        flip = bool(torch.rand((), generator=generator) < 0.5) and hflip
        out = {}
        for size in sizes:
            crop = im.resize((size, size), Image.Resampling.BILINEAR, box=(j, i, j + w, i + h))
            out[size] = _to_tensor(crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if flip else crop)
        return out


def _to_tensor(im) -> torch.Tensor:
    """A PIL RGB image as a uint8 (3, H, W) tensor."""
    return torch.from_numpy(np.array(im, dtype=np.uint8, copy=True)).permute(2, 0, 1).contiguous()


def _random_resized_crop_params(height: int, width: int, g: torch.Generator,
                                scale: tuple[float, float] = (0.08, 1.0),
                                ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a RandomResizedCrop (torchvision's algorithm, randomness from ``g``)."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * float(torch.empty(()).uniform_(scale[0], scale[1], generator=g))
        aspect = math.exp(float(torch.empty(()).uniform_(log_ratio[0], log_ratio[1], generator=g)))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            i = int(torch.randint(0, height - h + 1, (), generator=g))
            j = int(torch.randint(0, width - w + 1, (), generator=g))
            return i, j, h, w
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


Dataset = ImageDataset | FolderDataset
"""What a registered reader returns, and what the splits and batches take."""
