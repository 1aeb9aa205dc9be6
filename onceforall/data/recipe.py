"""The preprocessing recipe of a dataset: how a raw image becomes the network's input, written into export sidecars
so that a deployment feeds the network what it was evaluated on (a plain resize where the run center-padded or
cropped costs points), and applied by :func:`apply_recipe`.

A recipe is plain JSON::

    {"color": "L" | "RGB", "steps": [...], "scale": 255, "normalization": {"mean": [...], "std": [...]}}

applied in order: the ``steps`` on the uint8 image, division by ``scale``, per-channel normalization. Steps:

* ``{"op": "center_pad", "size": S}``: zero padding around the image to S x S (Fashion-MNIST at S >= 28);
* ``{"op": "resize", "size": S, "antialias": bool}``: bilinear resize to S x S (torch, align_corners=False);
* ``{"op": "resize_shorter", "size": N}``: PIL bilinear resize of the shorter side to N (aspect kept);
* ``{"op": "center_crop", "size": S}``;
* ``{"op": "side_by_side", "size": S}``: two 28 x 28 items given as one 28 x 56 image, each squeezed to S x S/2
  (fashion-mnist-pairs);
* ``{"op": "resize_normalized", "size": r}``: bilinear resize of the normalized float image (the network's own
  resize to the arch's resolution when it differs from the stored size; it comes after normalization).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["apply_recipe", "eval_recipe"]


def eval_recipe(load_steps: list[dict], resolution: int, stored_size: int, channels: int,
                mean: tuple[float, ...], std: tuple[float, ...]) -> dict[str, Any]:
    """The whole recipe of an evaluation at ``resolution``: the dataset's ``load_steps`` (to ``stored_size``),
    then scale and normalization, then the network's resize when ``resolution`` differs."""
    steps = [dict(s) for s in load_steps]
    if resolution != stored_size:
        steps.append({"op": "resize_normalized", "size": resolution})
    return {"color": "L" if channels == 1 else "RGB", "steps": steps, "scale": 255,
            "normalization": {"mean": [float(m) for m in mean], "std": [float(s) for s in std]}}


def _resize(x: torch.Tensor, size: int, antialias: bool) -> torch.Tensor:
    return F.interpolate(x[None].float(), size=(size, size), mode="bilinear", align_corners=False,
                         antialias=antialias)[0]


def apply_recipe(recipe: dict[str, Any], image: Any) -> torch.Tensor:
    """The network input (float32, (C, r, r)) for one raw image: a PIL image, or a uint8 array/tensor (H, W) or
    (C, H, W) / (H, W, C) for 1 or 3 channels."""
    from PIL import Image

    channels = 1 if recipe["color"] == "L" else 3
    if isinstance(image, Image.Image):
        image = image.convert(recipe["color"])
    x: Any = image
    normalized = False
    for step in recipe["steps"]:
        op, size = step["op"], int(step["size"])
        if op == "resize_shorter":
            pil = x if isinstance(x, Image.Image) else Image.fromarray(_to_hwc(x, channels).squeeze(-1)
                                                                      if channels == 1 else _to_hwc(x, channels))
            w, h = pil.size
            nw, nh = (size, int(size * h / w)) if w <= h else (int(size * w / h), size)
            x = pil.resize((nw, nh), Image.Resampling.BILINEAR)
            continue
        if op == "center_crop" and isinstance(x, Image.Image):
            w, h = x.size
            top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
            x = x.crop((left, top, left + size, top + size))
            continue
        t = _to_chw(x, channels)
        if op == "center_pad":
            lo_h, lo_w = (size - t.shape[1]) // 2, (size - t.shape[2]) // 2
            t = F.pad(t, (lo_w, size - t.shape[2] - lo_w, lo_h, size - t.shape[1] - lo_h))
        elif op == "center_crop":
            top, left = int(round((t.shape[1] - size) / 2.0)), int(round((t.shape[2] - size) / 2.0))
            t = t[:, top: top + size, left: left + size]
        elif op == "resize":
            t = _resize(t, size, bool(step.get("antialias", False))).round_().clamp_(0, 255).to(torch.uint8)
        elif op == "side_by_side":
            half = size // 2
            left = F.interpolate(t[None, :, :, : t.shape[2] // 2].float(), size=(size, half), mode="bilinear",
                                 align_corners=False, antialias=True)[0]
            right = F.interpolate(t[None, :, :, t.shape[2] // 2:].float(), size=(size, size - half),
                                  mode="bilinear", align_corners=False, antialias=True)[0]
            t = torch.cat([left, right], dim=2).round_().clamp_(0, 255).to(torch.uint8)
        elif op == "resize_normalized":
            if not normalized:
                t = _normalize(t, recipe)
                normalized = True
            t = _resize(t, size, False)
        else:
            raise ValueError(f"recipe: step op {op!r} is not known; valid: center_pad, resize, resize_shorter, "
                             "center_crop, side_by_side, resize_normalized")
        x = t
    t = _to_chw(x, channels)
    return t if normalized else _normalize(t, recipe)


def _normalize(t: torch.Tensor, recipe: dict[str, Any]) -> torch.Tensor:
    norm = recipe["normalization"]
    mean = torch.tensor(norm["mean"], dtype=torch.float32).view(-1, 1, 1)
    std = torch.tensor(norm["std"], dtype=torch.float32).view(-1, 1, 1)
    return (t.float() / float(recipe["scale"]) - mean) / std


def _to_chw(x: Any, channels: int) -> torch.Tensor:
    from PIL import Image

    if isinstance(x, Image.Image):
        x = np.array(x, dtype=np.uint8, copy=True)
    t = torch.as_tensor(np.asarray(x)) if not isinstance(x, torch.Tensor) else x
    if t.dim() == 2:
        t = t[None]
    elif t.dim() == 3 and t.shape[0] not in (1, 3) and t.shape[-1] in (1, 3):
        t = t.permute(2, 0, 1)
    if t.dim() != 3 or t.shape[0] != channels:
        raise ValueError(f"recipe: image of shape {tuple(t.shape)} is not valid; expected {channels} channel(s)")
    return t.contiguous()


def _to_hwc(x: Any, channels: int) -> np.ndarray:
    return _to_chw(x, channels).permute(1, 2, 0).numpy()
