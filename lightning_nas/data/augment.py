"""Batched, on-device image augmentation: random crop with padding, horizontal flip, normalisation and
cutout (DeVries & Taylor, 2017), equivalent to DARTS's per-image torchvision pipeline
(RandomCrop(pad) -> RandomHorizontalFlip -> ToTensor -> Normalize -> Cutout) but without per-image
Python work. Randomness comes from a generator seeded per batch, so a batch's augmentation depends only
on (seed, epoch, step, rank) and a resumed run sees the same pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


class BatchAugment:
    def __init__(self, mean: Sequence[float], std: Sequence[float], crop_padding: int = 0, hflip: bool = False,
                 cutout_length: int = 0):
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.crop_padding = crop_padding
        self.hflip = hflip
        self.cutout_length = cutout_length

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 [0, 255] -> normalised float32."""
        mean, std = self.mean.to(x.device), self.std.to(x.device)
        return (x.float().div_(255.0) - mean) / std

    def __call__(self, x: torch.Tensor, seed: int) -> torch.Tensor:
        """Augment a uint8 NCHW batch (on any device) and return normalised float32."""
        g = torch.Generator().manual_seed(int(seed))
        b, c, h, w = x.shape
        dev = x.device
        if self.crop_padding > 0:
            p = self.crop_padding
            padded = F.pad(x, (p, p, p, p))
            oy = torch.randint(0, 2 * p + 1, (b,), generator=g).to(dev)
            ox = torch.randint(0, 2 * p + 1, (b,), generator=g).to(dev)
            rows = (oy[:, None] + torch.arange(h, device=dev))[:, None, :, None]
            cols = (ox[:, None] + torch.arange(w, device=dev))[:, None, None, :]
            bi = torch.arange(b, device=dev)[:, None, None, None]
            ci = torch.arange(c, device=dev)[None, :, None, None]
            x = padded[bi, ci, rows, cols]
        if self.hflip:
            flip = (torch.rand(b, generator=g) < 0.5).to(dev)
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
        out = self.normalize(x)
        if self.cutout_length > 0:
            half = self.cutout_length // 2
            cy = torch.randint(0, h, (b,), generator=g).to(dev)
            cx = torch.randint(0, w, (b,), generator=g).to(dev)
            ys = torch.arange(h, device=dev)[None, :]
            xs = torch.arange(w, device=dev)[None, :]
            in_y = (ys >= (cy[:, None] - half).clamp(0, h)) & (ys < (cy[:, None] + half).clamp(0, h))
            in_x = (xs >= (cx[:, None] - half).clamp(0, w)) & (xs < (cx[:, None] + half).clamp(0, w))
            hole = in_y[:, :, None] & in_x[:, None, :]
            out = out.masked_fill(hole[:, None], 0.0)
        return out
