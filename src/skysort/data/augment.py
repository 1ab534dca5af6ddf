"""Training augmentation on whole batches, in torch, in the training process.

Decoding is done once (the pixel cache, :mod:`skysort.data.transforms`); what reaches the
training process is a batch of uint8 squares of side ``resize_size`` (the resized image's
centre). :class:`BatchAugment` turns it into the model's normalised input with one
``grid_sample`` for every rotation, shift, zoom, flip and crop of the batch, and a few
tensor operations for brightness, contrast, saturation and noise: a fraction of the cost
of doing each image in Pillow in a worker process, and no worker competing with the
model for the cores.

Every random draw comes from a generator seeded by ``(seed, epoch, image index)``, so an
image's augmentation does not depend on its batch or on the process that draws it: an
interrupted run resumes with exactly the images it would have seen.

Presets (:data:`~skysort.data.transforms.AUGMENT_PRESETS`):

* ``sky``: rotation by any angle (the border filled by reflection, never black corners),
  a horizontal flip, shifts of up to 5% and zoom of up to 10%, brightness and contrast
  within 10%, and Gaussian noise of up to 4 grey levels;
* ``photo``: a random crop of 50-100% of the area (aspect 3:4 to 4:3) resized to the
  input, a flip, brightness, contrast and saturation within 20%;
* ``none``: the centre crop, as evaluation sees it.

Images of another channel count than three (FITS bands, ``channels="all"``): every
geometric transform moves all channels alike; of the photometric ones only brightness and
contrast apply, the same to every channel (contrast blends with the image's mean over all
channels), so the ratios between bands (colours) survive, and noise of one strength,
independent in each band as in a detector; saturation, which presumes RGB, never applies.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from skysort.data.transforms import AUGMENT_PRESETS, Preprocess
from skysort.errors import ConfigError

#: ITU-R 601 luma weights, as torchvision's grayscale conversion.
_LUMA = (0.299, 0.587, 0.114)
#: Fields of noise drawn once per run; each image adds one, shifted by its own offset.
NOISE_FIELDS = 8


class BatchAugment:
    """``(uint8 (N, S, S, C) squares, [(epoch, index), ...]) -> float (N, C, size, size)``,
    augmented with ``preset`` and normalised as ``preprocess`` says (``C`` =
    :attr:`Preprocess.channels`)."""

    def __init__(self, preprocess: Preprocess, preset: str = "sky", seed: int = 0) -> None:
        if preset not in AUGMENT_PRESETS:
            raise ConfigError(f"augment={preset!r}: must be one of {', '.join(AUGMENT_PRESETS)}")
        self.preprocess, self.preset, self.seed = preprocess, preset, seed
        self.mean = torch.tensor(preprocess.mean).view(1, -1, 1, 1)
        self.std = torch.tensor(preprocess.std).view(1, -1, 1, 1)
        self._bank: torch.Tensor | None = None

    def __call__(self, pixels: torch.Tensor, keys: Sequence[tuple[int, int]]) -> torch.Tensor:
        size = self.preprocess.input_size
        images = pixels.permute(0, 3, 1, 2).float().div_(255.0)
        if self.preset == "none":
            top = (images.shape[2] - size) // 2
            left = (images.shape[3] - size) // 2
            out = images[:, :, top:top + size, left:left + size]
            return ((out - self.mean) / self.std).contiguous(memory_format=torch.channels_last)
        draws = [self._draws(key, images.shape[2], images.shape[3]) for key in keys]
        theta = torch.tensor(np.stack([d["theta"] for d in draws]), dtype=torch.float32)
        grid = F.affine_grid(theta, [len(keys), images.shape[1], size, size],
                             align_corners=False)
        out = F.grid_sample(images, grid, mode="bilinear", align_corners=False,
                            padding_mode="reflection" if self.preset == "sky" else "border")
        return self._colour(out, draws).contiguous(memory_format=torch.channels_last)

    def _draws(self, key: tuple[int, int], height: int, width: int) -> dict[str, Any]:
        """The random parameters of one image, from its own generator."""
        rng = np.random.default_rng([self.seed, *key])
        size = self.preprocess.input_size
        if self.preset == "sky":
            angle = math.radians(rng.uniform(0, 360))
            shift = rng.uniform(-0.05, 0.05, 2) * size
            scale = rng.uniform(0.9, 1.1)
            flip = rng.random() < 0.5
            cos, sin = math.cos(angle) / scale, math.sin(angle) / scale
            # output pixel offset u (from the centre) samples the source at R(-angle)/scale
            # (u - shift); affine_grid works in [-1, 1] of each image's own extent.
            a = np.array([[cos * size / width, sin * size / width],
                          [-sin * size / height, cos * size / height]])
            t = -np.array([[cos, sin], [-sin, cos]]) @ shift / np.array([width / 2, height / 2])
            draws = {"brightness": rng.uniform(0.9, 1.1), "contrast": rng.uniform(0.9, 1.1),
                     "saturation": 1.0, "noise": rng.uniform(0.0, 4.0),
                     "noise_field": int(rng.integers(NOISE_FIELDS)),
                     "noise_dy": int(rng.integers(size)), "noise_dx": int(rng.integers(size))}
        else:
            area = height * width * rng.uniform(0.5, 1.0)
            ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
            w = min(width, round(math.sqrt(area * ratio)))
            h = min(height, round(math.sqrt(area / ratio)))
            top, left = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
            flip = rng.random() < 0.5
            a = np.array([[w / width, 0.0], [0.0, h / height]])
            t = np.array([(2 * left + w) / width - 1, (2 * top + h) / height - 1])
            draws = {"brightness": rng.uniform(0.8, 1.2), "contrast": rng.uniform(0.8, 1.2),
                     "saturation": rng.uniform(0.8, 1.2), "noise": 0.0}
        if flip:
            a = a @ np.diag([-1.0, 1.0])
        return {**draws, "theta": np.concatenate([a, t[:, None]], axis=1)}

    def _colour(self, images: torch.Tensor, draws: list[dict[str, float]]) -> torch.Tensor:
        """Brightness, contrast and saturation, clamped, normalised, then noise.

        Brightness ``b`` and contrast ``c`` (blending with the image's mean grey level
        ``m``) are one affine map per image, ``c b x + (1 - c) b m``; saturation blends
        with each pixel's grey level. Noise comes from a bank of fields drawn once,
        shifted by a random offset per image: the same for an image in any batch, at a
        fraction of the cost of drawing fresh noise for every image. Without three channels
        ``m`` is the mean over every channel, and saturation is skipped.
        """
        def column(name: str) -> torch.Tensor:
            return torch.tensor([d[name] for d in draws], dtype=torch.float32).view(-1, 1, 1, 1)

        rgb = images.shape[1] == 3
        luma = torch.tensor(_LUMA).view(1, 3, 1, 1)
        brightness, contrast = column("brightness"), column("contrast")
        grey_mean = ((images * luma).sum(1, keepdim=True) if rgb
                     else images.mean(1, keepdim=True)).mean(dim=(2, 3), keepdim=True)
        images = images.mul_(contrast * brightness).add_((1 - contrast) * brightness * grey_mean)
        saturation = column("saturation")
        if rgb and bool((saturation != 1).any()):
            grey = (images * luma).sum(1, keepdim=True)
            images = images.mul_(saturation).add_(grey * (1 - saturation))
        images = images.clamp_(0, 1).sub_(self.mean).div_(self.std)
        sigma = column("noise") * (column("noise") > 0.5)
        if bool((sigma > 0).any()):
            bank = self._noise_bank(images.shape[1:])
            for i, d in enumerate(draws):
                if float(sigma[i]) > 0:
                    field = torch.roll(bank[int(d["noise_field"])],
                                       (int(d["noise_dy"]), int(d["noise_dx"])), dims=(1, 2))
                    images[i].add_(field * (float(sigma[i]) / 255.0) / self.std[0])
        return images

    def _noise_bank(self, shape: torch.Size) -> torch.Tensor:
        """:data:`NOISE_FIELDS` fields of unit Gaussian noise, the same for every batch."""
        if self._bank is None or self._bank.shape[1:] != shape:
            gen = torch.Generator().manual_seed(self.seed)
            self._bank = torch.randn((NOISE_FIELDS, *shape), generator=gen)
        return self._bank
