"""Every dataset yields float32 NCHW batches already shaped and normalised for the model it feeds."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from harness.errors import HarnessError, first_line
from harness.models.registry import ModelSpec

SPLITS = ("train", "calib", "val")
DIGITS_SEED = 0
DIGITS_VAL, DIGITS_CALIB = 400, 200
SYNTHETIC_SIZE = 64


def dataset_names() -> list[str]:
    return ["digits", "imagefolder:PATH", "synthetic"]


@dataclass
class Dataset:
    """A named source of batches; `has_labels` is False for synthetic data (accuracy not applicable)."""

    name: str
    spec: ModelSpec
    has_labels: bool = True

    @property
    def num_classes(self) -> int | None:
        """How many classes the labels come from (None without labels): a model head of another width cannot be
        scored against them."""
        return None

    def batches(self, split: str, batch_size: int, limit: int | None = None) -> Iterator[tuple]:
        """Yield (inputs, labels-or-None); `limit` caps the number of samples, keeping batches full."""
        if split not in SPLITS:
            raise HarnessError(f"split {split!r} is unknown: use one of {', '.join(SPLITS)}")
        yield from self._batches(split, batch_size, limit)

    def _batches(self, split, batch_size, limit):  # pragma: no cover - abstract
        raise NotImplementedError

    def take(self, split: str, n: int) -> tuple[np.ndarray, np.ndarray | None]:
        """The first n samples of a split as one array pair (for small, fixed input sets)."""
        xs, ys = [], []
        for x, y in self.batches(split, min(n, 256), limit=n):
            xs.append(x)
            ys.append(y)
        labels = np.concatenate(ys) if self.has_labels and ys else None
        return np.concatenate(xs), labels


def _fit(images: torch.Tensor, spec: ModelSpec) -> np.ndarray:
    """Resize, match channels and normalise a [0,1] NCHW tensor for the model."""
    c, h, w = spec.input_shape
    if images.shape[-2:] != (h, w):
        images = F.interpolate(images, size=(h, w), mode="bilinear", align_corners=False)
    if images.shape[1] != c:
        if images.shape[1] != 1:
            raise HarnessError(f"the dataset's images have {images.shape[1]} channels but model {spec.name} takes {c}: "
                               f"use {c}-channel images or a model whose --input-shape starts with {images.shape[1]}")
        images = images.expand(-1, c, -1, -1)
    mean = torch.tensor(_per_channel(spec.mean, c)).view(1, c, 1, 1)
    std = torch.tensor(_per_channel(spec.std, c)).view(1, c, 1, 1)
    return ((images - mean) / std).float().contiguous().numpy()


def _per_channel(values, c):
    """Normalisation values for c channels: one value spreads to all; a 3-channel (ImageNet) default serves a
    1-channel model as its average (a grey image's statistics)."""
    values = list(values)
    if len(values) == c:
        return values
    if len(values) == 1:
        return values * c
    if c == 1:
        return [sum(values) / len(values)]
    raise HarnessError(f"normalisation has {len(values)} values for a {c}-channel input: give {c} or 1")


def _chunks(n: int, batch_size: int, limit: int | None):
    stop = n if limit is None else min(n, limit)
    for start in range(0, stop, batch_size):
        yield start, min(start + batch_size, stop)


class DigitsDataset(Dataset):
    """scikit-learn's bundled 8x8 digits, upsampled; seeded splits that never overlap."""

    def __init__(self, spec: ModelSpec):
        super().__init__("digits", spec)
        from sklearn.datasets import load_digits

        bunch = load_digits()
        order = np.random.default_rng(DIGITS_SEED).permutation(len(bunch.target))
        val = order[:DIGITS_VAL]
        calib = order[DIGITS_VAL : DIGITS_VAL + DIGITS_CALIB]
        train = order[DIGITS_VAL + DIGITS_CALIB :]
        self.indices = {"train": train, "calib": calib, "val": val}
        self.images = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)
        self.labels = bunch.target.astype(np.int64)

    def size(self, split: str) -> int:
        return len(self.indices[split])

    @property
    def num_classes(self) -> int:
        return 10

    def _batches(self, split, batch_size, limit):
        idx = self.indices[split]
        for a, b in _chunks(len(idx), batch_size, limit):
            sel = idx[a:b]
            yield _fit(self.images[sel], self.spec), self.labels[sel]


class ImageFolderDataset(Dataset):
    """A user's labelled images: PATH/<class>/*.jpg, or PATH/{train,calib,val}/<class>/*.

    Without split folders, a seeded 20 % of PATH is calibration and the rest validation. Class indices follow
    sorted folder names, as torchvision's ImageFolder does, so they must match the model's label order.
    """

    def __init__(self, spec: ModelSpec, root: Path):
        super().__init__(f"imagefolder:{root}", spec)
        from torchvision import datasets, transforms

        c, h, w = spec.input_shape
        tf = transforms.Compose(
            [transforms.Resize(max(h, w) * 8 // 7), transforms.CenterCrop((h, w)), transforms.ToTensor()]
        )
        splits = {s: root / s for s in SPLITS if (root / s).is_dir()}
        if splits and "val" not in splits:  # else the split folders would be read as classes
            raise HarnessError(f"--dataset imagefolder:{root}: has {', '.join(f'{s}/' for s in splits)} but no val/: "
                               "add val/<class>/image (split layout), or lay out PATH/<class>/image with no split "
                               "folders (split 80/20 by harness)")
        try:
            if "val" in splits:
                self.folders = {s: datasets.ImageFolder(str(p), transform=tf) for s, p in splits.items()}
                self.indices = {s: np.arange(len(f)) for s, f in self.folders.items()}
            else:
                whole = datasets.ImageFolder(str(root), transform=tf)
                order = np.random.default_rng(DIGITS_SEED).permutation(len(whole))
                cut = max(1, len(order) // 5)
                self.folders = {"calib": whole, "val": whole, "train": whole}
                self.indices = {"calib": order[:cut], "val": order[cut:], "train": order[cut:]}
        except (FileNotFoundError, RuntimeError) as exc:
            raise HarnessError(f"--dataset imagefolder:{root}: {exc}; lay it out as PATH/<class>/image") from exc

    def size(self, split: str) -> int:
        return len(self.indices.get(split, ()))

    @property
    def num_classes(self) -> int:
        return len(next(iter(self.folders.values())).classes)

    def _batches(self, split, batch_size, limit):
        if split not in self.folders:
            raise HarnessError(f"{self.name} has no {split!r} split: add a {split}/ folder")
        folder, idx = self.folders[split], self.indices[split]
        for a, b in _chunks(len(idx), batch_size, limit):
            items = [_load_image(folder, int(i)) for i in idx[a:b]]
            images = torch.stack([t for t, _ in items])
            yield _fit(images, self.spec), np.array([lbl for _, lbl in items], dtype=np.int64)


def _load_image(folder, index: int):
    """One (image, label) of an ImageFolder; an unreadable or truncated image (or a FIFO named like one, which
    would hang the read) is named in one line."""
    from harness.fileio import expect_file

    expect_file(Path(folder.samples[index][0]), "image", "replace or remove it")
    try:
        return folder[index]
    except Exception as exc:  # PIL raises several types, and torchvision's transforms others
        path = folder.samples[index][0]
        raise HarnessError(f"{path}: unreadable image ({type(exc).__name__}: {first_line(exc)}); replace or remove "
                           "it") from exc


class SyntheticDataset(Dataset):
    """Seeded random inputs: enough for latency; accuracy is not applicable."""

    def __init__(self, spec: ModelSpec, size: int = SYNTHETIC_SIZE):
        super().__init__("synthetic", spec, has_labels=False)
        self.n = size

    def size(self, split: str) -> int:
        return self.n

    def _batches(self, split, batch_size, limit):
        rng = np.random.default_rng(SPLITS.index(split))
        for a, b in _chunks(self.n, batch_size, limit):
            yield rng.standard_normal((b - a, *self.spec.input_shape), dtype=np.float32), None


def resolve_dataset(name: str, spec: ModelSpec) -> Dataset:
    if name == "digits":
        return DigitsDataset(spec)
    if name == "synthetic":
        return SyntheticDataset(spec)
    if name.startswith("imagefolder:"):
        root = Path(name.split(":", 1)[1])
        if not root.is_dir():
            raise HarnessError(f"--dataset {name}: {root} is not a directory; give imagefolder:PATH to images")
        return ImageFolderDataset(spec, root)
    raise HarnessError(f"unknown dataset {name!r}: choose one of {', '.join(dataset_names())}")
