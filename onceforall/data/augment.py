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
- :func:`auto_augment`: AutoAugment's ImageNet policy (Cubuk et al. 2019, Table 9) as the official DεpS command uses
  it (``--auto_augment imagenet``, torchvision's ``AutoAugment``): one of its 25 sub-policies drawn uniformly,
  each of its two operations applied with its probability at its magnitude (10 bins: rotate 0-30 degrees, shear
  0-0.3, colour/contrast/sharpness/brightness factor 1 + 0-0.9, signed ops with a random sign; posterize 8..4 bits;
  solarize threshold 255..0), with PIL's operations (bilinear resampling, areas outside filled with ``fill``).
- :func:`mix_batch`: mixup and CutMix on a whole normalized batch (the official DεpS code's ``RandomMixup`` /
  ``RandomCutmix`` in its collate function, one of the two chosen per batch), labels turned into distributions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["IMAGENET_POLICY", "auto_augment", "color_jitter", "mix_batch", "random_erase"]


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


# AutoAugment's ImageNet policy: 25 sub-policies of two (operation, probability, magnitude bin) each.
IMAGENET_POLICY: tuple[tuple[tuple[str, float, int | None], tuple[str, float, int | None]], ...] = tuple(
    ((a, pa, ma), (b, pb, mb)) for a, pa, ma, b, pb, mb in (
        ("Posterize", 0.4, 8, "Rotate", 0.6, 9), ("Solarize", 0.6, 5, "AutoContrast", 0.6, None),
        ("Equalize", 0.8, None, "Equalize", 0.6, None), ("Posterize", 0.6, 7, "Posterize", 0.6, 6),
        ("Equalize", 0.4, None, "Solarize", 0.2, 4), ("Equalize", 0.4, None, "Rotate", 0.8, 8),
        ("Solarize", 0.6, 3, "Equalize", 0.6, None), ("Posterize", 0.8, 5, "Equalize", 1.0, None),
        ("Rotate", 0.2, 3, "Solarize", 0.6, 8), ("Equalize", 0.6, None, "Posterize", 0.4, 6),
        ("Rotate", 0.8, 8, "Color", 0.4, 0), ("Rotate", 0.4, 9, "Equalize", 0.6, None),
        ("Equalize", 0.0, None, "Equalize", 0.8, None), ("Invert", 0.6, None, "Equalize", 1.0, None),
        ("Color", 0.6, 4, "Contrast", 1.0, 8), ("Rotate", 0.8, 8, "Color", 1.0, 2),
        ("Color", 0.8, 8, "Solarize", 0.8, 7), ("Sharpness", 0.4, 7, "Invert", 0.6, None),
        ("ShearX", 0.6, 5, "Equalize", 1.0, None), ("Color", 0.4, 0, "Equalize", 0.6, None),
        ("Equalize", 0.4, None, "Solarize", 0.2, 4), ("Solarize", 0.6, 5, "AutoContrast", 0.6, None),
        ("Invert", 0.6, None, "Equalize", 1.0, None), ("Color", 0.6, 4, "Contrast", 1.0, 8),
        ("Equalize", 0.8, None, "Equalize", 0.6, None),
    ))
_BINS = 10
_SIGNED = {"Rotate", "ShearX", "Color", "Contrast", "Sharpness", "Brightness"}


def _magnitude(op: str, bin_: int | None) -> float:
    """The value of magnitude bin ``bin_`` (0..9) of ``op``."""
    if bin_ is None:
        return 0.0
    t = bin_ / (_BINS - 1)
    if op == "Rotate":
        return 30.0 * t
    if op == "ShearX":
        return 0.3 * t
    if op in ("Color", "Contrast", "Sharpness", "Brightness"):
        return 0.9 * t
    if op == "Posterize":
        return float(8 - round(bin_ / ((_BINS - 1) / 4)))
    if op == "Solarize":
        return 255.0 * (1 - t)
    raise ValueError(f"auto_augment: operation {op!r} takes no magnitude")


def _apply(img: Any, op: str, m: float, fill: tuple[int, ...]) -> Any:
    """One AutoAugment operation on a PIL RGB image."""
    from PIL import Image, ImageEnhance, ImageOps

    if op == "Rotate":
        return img.rotate(m, resample=Image.Resampling.BILINEAR, fillcolor=fill)
    if op == "ShearX":  # output (x, y) reads input (x + m y, y)
        return img.transform(img.size, Image.Transform.AFFINE, (1.0, m, 0.0, 0.0, 1.0, 0.0),
                             resample=Image.Resampling.BILINEAR, fillcolor=fill)
    if op in ("Color", "Contrast", "Sharpness", "Brightness"):
        return getattr(ImageEnhance, op)(img).enhance(1.0 + m)
    if op == "Posterize":
        return ImageOps.posterize(img, int(m))
    if op == "Solarize":
        return ImageOps.solarize(img, m)
    if op == "AutoContrast":
        return ImageOps.autocontrast(img)
    if op == "Equalize":
        return ImageOps.equalize(img)
    if op == "Invert":
        return ImageOps.invert(img)
    raise ValueError(f"auto_augment: unknown operation {op!r}")


def auto_augment(x: torch.Tensor, g: torch.Generator, fill: Sequence[int] = (0, 0, 0),
                 policy: Sequence = IMAGENET_POLICY) -> torch.Tensor:
    """``x`` (uint8 (3, H, W)) through one sub-policy of ``policy`` drawn from ``g``: the sub-policy (uniform),
    then two uniforms (each operation applies when its draw <= its probability), then two signs (a signed
    magnitude is negated on 0), in that order. Returns ``x`` itself when neither operation applies."""
    from PIL import Image

    k = int(torch.randint(len(policy), (), generator=g))
    probs = torch.rand(2, generator=g).tolist()
    signs = torch.randint(2, (2,), generator=g).tolist()
    img = None
    for (op, p, bin_), u, sign in zip(policy[k], probs, signs):
        if u > p:
            continue
        m = _magnitude(op, bin_)
        if op in _SIGNED and sign == 0:
            m = -m
        if img is None:
            img = Image.fromarray(x.permute(1, 2, 0).numpy())
        img = _apply(img, op, m, tuple(int(v) for v in fill))
    if img is None:
        return x
    return torch.from_numpy(np.array(img, dtype=np.uint8, copy=True)).permute(2, 0, 1).contiguous()


def _one_hot(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    return F.one_hot(y, num_classes).to(torch.float32)


def mix_batch(x: torch.Tensor, y: torch.Tensor, num_classes: int, rng: np.random.Generator, *,
              mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0, prob: float = 1.0,
              switch_prob: float = 0.5) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """Mixup (Zhang et al. 2018) or CutMix (Yun et al. 2019) of a normalized float batch ``x`` (b, C, H, W) with
    integer labels ``y`` (b,): every image is paired with the one before it (``roll(1)``, as the official DεpS
    collate does), and the labels become distributions (b, num_classes), float32.

    Draws from ``rng`` only, in this order: whether the batch is mixed (uniform < ``prob``), which mix (CutMix when
    uniform < ``switch_prob`` if both alphas are > 0), lambda ~ Beta(alpha, alpha), and for CutMix the box centre
    (column int(u·W), then row int(u·H), u uniform in [0, 1): the same place at every resolution). Mixup:
    ``lam·x + (1 - lam)·x_prev``. CutMix: a box of half-sides int(0.5·sqrt(1 - lam)·W) and
    int(0.5·sqrt(1 - lam)·H) around the centre, clipped to the image, is copied from x_prev, and lambda becomes
    the part of the image left unpasted (1 - box area / (H·W)). Targets: ``lam·onehot(y) + (1 - lam)·onehot(y_prev)``;
    label smoothing belongs to the loss (cross-entropy against ``(1 - ls)·target + ls / C``, as torch's and timm's).
    Returns (x, targets, {"kind", "lam"}) with kind "none", "mixup" or "cutmix"; ``x`` itself when not mixed.
    """
    for name, alpha in (("mixup_alpha", mixup_alpha), ("cutmix_alpha", cutmix_alpha)):
        if alpha < 0:
            raise ValueError(f"mix_batch: {name} = {alpha!r} is not valid; must be >= 0 (0: off)")
    if not 0 <= prob <= 1 or not 0 <= switch_prob <= 1:
        raise ValueError(f"mix_batch: prob = {prob!r}, switch_prob = {switch_prob!r} are not valid; each in [0, 1]")
    target = _one_hot(y, num_classes)
    if (mixup_alpha == 0 and cutmix_alpha == 0) or x.shape[0] == 0 or rng.random() >= prob:
        return x, target, {"kind": "none", "lam": 1.0}
    cutmix = cutmix_alpha > 0 and (mixup_alpha == 0 or rng.random() < switch_prob)
    lam = float(rng.beta(cutmix_alpha, cutmix_alpha) if cutmix else rng.beta(mixup_alpha, mixup_alpha))
    x_prev = x.roll(1, 0)
    if cutmix:
        height, width = x.shape[-2:]
        cx, cy = int(rng.random() * width), int(rng.random() * height)  # relative: same box at any resolution
        half = 0.5 * math.sqrt(1.0 - lam)
        half_w, half_h = int(half * width), int(half * height)
        x0, x1 = max(cx - half_w, 0), min(cx + half_w, width)
        y0, y1 = max(cy - half_h, 0), min(cy + half_h, height)
        x = x.clone()
        x[..., y0:y1, x0:x1] = x_prev[..., y0:y1, x0:x1]
        lam = 1.0 - (x1 - x0) * (y1 - y0) / (width * height)  # the label follows the pixels actually pasted
    else:
        x = x * lam + x_prev * (1.0 - lam)
    target = target * lam + target.roll(1, 0) * (1.0 - lam)
    return x, target, {"kind": "cutmix" if cutmix else "mixup", "lam": lam}
