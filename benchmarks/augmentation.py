"""Batched device augmentation vs the same pipeline done per image in Python (DARTS's torchvision-style
RandomCrop(pad 4) -> HorizontalFlip -> Normalize -> Cutout(16)), in one process on the same images.

    python benchmarks/augmentation.py --data ../shared/data/cifar10-jpg.tar.gz --images 8192

Reports images/s of both and the speed-up ratio (per-image time / batched time).
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

from lightning_nas.data.augment import BatchAugment
from lightning_nas.data.sources import load_digits, load_image_folder


def per_image_reference(x: torch.Tensor, aug: BatchAugment, g: torch.Generator) -> torch.Tensor:
    """What a per-image Dataset.__getitem__ pipeline does: one image at a time."""
    out = []
    p, length = aug.crop_padding, aug.cutout_length
    for img in x:
        c, h, w = img.shape
        padded = F.pad(img, (p, p, p, p))
        oy, ox = torch.randint(0, 2 * p + 1, (2,), generator=g).tolist()
        img = padded[:, oy:oy + h, ox:ox + w]
        if torch.rand(1, generator=g).item() < 0.5:
            img = img.flip(2)
        img = (img.float() / 255 - aug.mean[0]) / aug.std[0]
        cy, cx = torch.randint(0, h, (1,), generator=g).item(), torch.randint(0, w, (1,), generator=g).item()
        y0, y1 = max(0, cy - length // 2), min(h, cy + length // 2)
        x0, x1 = max(0, cx - length // 2), min(w, cx + length // 2)
        img[:, y0:y1, x0:x1] = 0
        out.append(img)
    return torch.stack(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="image folder / archive (default: digits)")
    parser.add_argument("--images", type=int, default=8192)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    ds = load_image_folder(args.data) if args.data else load_digits()
    x = ds.train.images[: args.images]
    aug = BatchAugment(ds.mean, ds.std, crop_padding=4, hflip=True, cutout_length=16)
    g = torch.Generator().manual_seed(0)

    t0 = time.perf_counter()
    for i in range(0, len(x), args.batch):
        per_image_reference(x[i:i + args.batch], aug, g).to(args.device)
    t_ref = time.perf_counter() - t0

    xd = x.to(args.device)
    t0 = time.perf_counter()
    for k, i in enumerate(range(0, len(xd), args.batch)):
        aug(xd[i:i + args.batch], seed=k)
    if args.device == "cuda":
        torch.cuda.synchronize()
    t_batched = time.perf_counter() - t0
    print(json.dumps({"images": len(x), "batch": args.batch, "device": args.device,
                      "per_image_images_per_s": round(len(x) / t_ref),
                      "batched_images_per_s": round(len(x) / t_batched),
                      "speedup": round(t_ref / t_batched, 1)}, indent=2))


if __name__ == "__main__":
    main()
