"""Per-image augmentations of the DεpS/OFA ImageNet recipe, written here (torchvision's PyPI wheel does not import
beside our torch), every random number from the ``torch.Generator`` passed in, on uint8 (C, H, W) images.

- :func:`random_erase`: torchvision's ``RandomErasing`` (Zhong et al. 2017) as the official DεpS command uses it
  (``--random_erase_prob 0.2``): with probability ``p``, a rectangle of 2-33 % of the area with aspect ratio
  0.3-3.3 (log-uniform) is filled; up to 10 tries to fit one, else the image is left alone. torchvision erases
  the normalized tensor with 0; here the uint8 image is filled with the normalization mean (round(mean x 255)),
  which normalizes to 0 within half a grey level.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = ["random_erase"]


def random_erase(x: torch.Tensor, p: float, g: torch.Generator, fill: Sequence[int],
                 scale: tuple[float, float] = (0.02, 0.33), ratio: tuple[float, float] = (0.3, 3.3)) -> torch.Tensor:
    """``x`` (uint8 (C, H, W)) with, at probability ``p``, one random rectangle set to ``fill`` (one value per
    channel); returns a new tensor when erased, ``x`` itself otherwise. Draws from ``g`` only."""
    if not 0 <= p <= 1:
        raise ValueError(f"random_erase: p = {p!r} is not valid; must be in [0, 1]")
    if p == 0 or float(torch.rand((), generator=g)) >= p:
        return x
    c, height, width = x.shape
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        erase_area = area * (scale[0] + (scale[1] - scale[0]) * float(torch.rand((), generator=g)))
        aspect = math.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * float(torch.rand((), generator=g)))
        h = int(round(math.sqrt(erase_area * aspect)))
        w = int(round(math.sqrt(erase_area / aspect)))
        if not (h < height and w < width):
            continue
        i = int(torch.randint(0, height - h + 1, (), generator=g))
        j = int(torch.randint(0, width - w + 1, (), generator=g))
        out = x.clone()
        out[:, i:i + h, j:j + w] = torch.tensor(list(fill), dtype=x.dtype).view(c, 1, 1)
        return out
    return x
