"""Per-image augmentations of the DεpS/OFA ImageNet recipe, written here (torchvision's PyPI wheel does not import
beside our torch), every random number from the ``torch.Generator`` passed in, on uint8 (C, H, W) images.

- :func:`random_erase`: torchvision's ``RandomErasing`` (Zhong et al. 2017) as the official DεpS command uses it
  (``--random_erase_prob 0.2``): with probability ``p``, a rectangle of 2-33 % of the area with aspect ratio
  0.3-3.3 (log-uniform) is filled; up to 10 tries to fit one, else the image is left alone. torchvision erases
  the normalized tensor with 0; here the uint8 image is filled with the normalization mean (round(mean x 255)),
  which normalizes to 0 within half a grey level.
- :func:`color_jitter`: torchvision's ``ColorJitter(brightness, contrast, saturation, hue)`` as the official DεpS
  command's ``--distort_color torch`` sets it (0.4, 0.4, 0.4, 0.1): the four adjustments in a random order, each
  factor uniform in [1 - s, 1 + s] (hue: a shift in [-h, h] of a turn), computed in float and rounded back to
  uint8 (torchvision's tensor path truncates, its PIL path rounds).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = ["color_jitter", "random_erase"]


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


def _gray(img: torch.Tensor) -> torch.Tensor:
    """ITU-R 601-2 luma of a float (3, H, W) image, as torchvision's rgb_to_grayscale: (1, H, W)."""
    return (0.2989 * img[0] + 0.587 * img[1] + 0.114 * img[2]).unsqueeze(0)


def _shift_hue(img: torch.Tensor, shift: float) -> torch.Tensor:
    """Rotate the hue of a float (3, H, W) image in [0, 1] by ``shift`` turns (HSV round trip)."""
    r, g, b = img
    maxc, _ = img.max(0)
    minc, _ = img.min(0)
    delta = maxc - minc
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    rc, gc, bc = (maxc - r) / safe, (maxc - g) / safe, (maxc - b) / safe
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(delta > 0, (h / 6.0) % 1.0, torch.zeros_like(h))
    s = torch.where(maxc > 0, delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc)), torch.zeros_like(maxc))
    v = maxc
    h = (h + shift) % 1.0
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    i = i.to(torch.int64) % 6
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    table = torch.stack([torch.stack(c) for c in ((v, q, p, p, t, v), (t, v, v, q, p, p), (p, p, t, v, v, q))])
    return table.gather(1, i.unsqueeze(0).unsqueeze(0).expand(3, 1, *i.shape)).squeeze(1)


def color_jitter(x: torch.Tensor, strengths: Sequence[float], g: torch.Generator) -> torch.Tensor:
    """``x`` (uint8 (3, H, W)) with brightness, contrast, saturation and hue jittered by ``strengths`` =
    (brightness, contrast, saturation, hue), in a random order; a strength of 0 leaves that one out. Draws
    from ``g`` only: the order (a permutation of 4), then one factor per non-zero strength."""
    if len(strengths) != 4 or any(v < 0 for v in strengths) or strengths[3] > 0.5:
        raise ValueError(f"color_jitter: {list(strengths)} is not valid; expected [brightness, contrast, saturation, "
                         "hue], each >= 0, hue <= 0.5")
    order = torch.randperm(4, generator=g).tolist()
    factors = []
    for k, v in enumerate(strengths):
        lo, hi = (-v, v) if k == 3 else (max(0.0, 1 - v), 1 + v)
        factors.append(lo + (hi - lo) * float(torch.rand((), generator=g)) if v > 0 else None)
    img = x.to(torch.float32)
    for k in order:
        f = factors[k]
        if f is None:
            continue
        if k == 0:  # brightness: blend with black
            img = (img * f).clamp(0, 255)
        elif k == 1:  # contrast: blend with the mean grey level
            img = (f * img + (1 - f) * _gray(img).mean()).clamp(0, 255)
        elif k == 2:  # saturation: blend with the grey image
            img = (f * img + (1 - f) * _gray(img)).clamp(0, 255)
        else:
            img = _shift_hue(img / 255.0, f) * 255.0
    return img.round().clamp(0, 255).to(torch.uint8)
