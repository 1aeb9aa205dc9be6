"""Speed of the batched augmentation: ``TrainBatches.batch`` (random crop with zero padding and horizontal flip of a
whole in-memory batch with two ``torch.gather`` ops) against a per-image Python loop computing the same batch from
the same per-sample random parameters.

    python benchmarks/data_speed.py                  # Fashion-MNIST, batch 256, 32 px, 1 thread, 50 rounds
    python benchmarks/data_speed.py --threads 2 --rounds 200

One intra-op thread by default: with 2 threads, another process busy on both cores makes every parallel region wait
for a time slice (tens of ms), which says nothing about this code. Each round times one batch of each, alternating
which goes first, so a shared machine's drifts hit both. Prints the median and best time of each and their ratio
(reference / batched). The design note in onceforall/data/batches.py refers to these numbers; the tests check that
the two compute the same batches (tests/test_data.py), not how fast.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from onceforall.core.seeds import derive_seed
from onceforall.data import Augment, ImageDataset, TrainBatches, default_root, load_dataset


def reference_batch(tb: TrainBatches, epoch: int, index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``tb.batch(epoch, index)`` one image at a time: the same permutation, crop offsets and flips (drawn from the
    documented seeds), each image padded, cropped and flipped on its own, then stacked and normalised."""
    ds = tb.ds
    assert isinstance(ds, ImageDataset)
    p, b = tb.augment.crop_padding, tb.batch_size
    idx = tb.permutation(epoch)[index * b: (index + 1) * b].tolist()
    g = torch.Generator().manual_seed(derive_seed(tb.seed, epoch, index))
    offsets = torch.randint(0, 2 * p + 1, (len(idx), 2), generator=g).tolist() if p > 0 else [(0, 0)] * len(idx)
    flips = (torch.rand(len(idx), generator=g) < 0.5).tolist() if tb.augment.hflip else [False] * len(idx)
    images = []
    for i, (dy, dx), flip in zip(idx, offsets, flips):
        image = ds.images[i]
        h, w = image.shape[-2:]
        if p > 0:
            image = F.pad(image, (p, p, p, p))[:, dy: dy + h, dx: dx + w]
        images.append(image.flip(-1) if flip else image)
    x = torch.stack(images).float().div_(255)
    mean = torch.tensor(ds.mean).view(1, -1, 1, 1)
    std = torch.tensor(ds.std).view(1, -1, 1, 1)
    return x.sub_(mean).div_(std).contiguous(memory_format=torch.channels_last), ds.labels[idx]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", default=None, help="Fashion-MNIST folder (default: onceforall's default root)")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=3)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    root = args.root or default_root("fashion-mnist")
    ds = load_dataset("fashion-mnist", root, "train", args.image_size)
    tb = TrainBatches(ds, args.batch_size, seed=0, augment=Augment(), image_size=args.image_size)
    # The two compute the same batch (uint8 crops equal; the normalisation may differ in the last float bit).
    for index in range(args.warmup):
        x, y = tb.batch(0, index)
        rx, ry = reference_batch(tb, 0, index)
        if not (torch.equal(y, ry) and torch.allclose(x, rx, atol=1e-5)):
            raise SystemExit(f"batch {index}: TrainBatches.batch differs from the per-image reference")

    batched, reference = [], []
    for r in range(args.rounds):
        index = r % tb.steps_per_epoch
        order = ((tb.batch, batched), (lambda e, i: reference_batch(tb, e, i), reference))
        for fn, times in order if r % 2 == 0 else order[::-1]:
            t0 = time.perf_counter()
            fn(0, index)
            times.append(time.perf_counter() - t0)

    def ms(v: float) -> str:
        return f"{v * 1e3:7.3f} ms"

    print(f"fashion-mnist train ({root}): batch {args.batch_size}, {args.image_size} px, {Augment()}, "
          f"{torch.get_num_threads()} thread(s), {args.rounds} rounds")
    print(f"{'':28s} {'median':>10s} {'best':>10s}")
    for name, times in (("TrainBatches.batch", batched), ("per-image Python loop", reference)):
        print(f"{name:28s} {ms(statistics.median(times))} {ms(min(times))}")
    print(f"{'ratio (loop / batched)':28s} {statistics.median(reference) / statistics.median(batched):7.2f} x   "
          f"{min(reference) / min(batched):7.2f} x")


if __name__ == "__main__":
    main()
