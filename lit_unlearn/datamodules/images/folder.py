"""Images stored as one sub-folder per class (e.g. PinsFaceRecognition), read with Pillow.

Two layouts are recognised under ``root``:

* **Fixed split**: ``root/train/<class>/...`` and ``root/test/<class>/...``. The folders are the
  split. The layout is chosen as soon as ``root`` holds a ``train/`` or a ``test/`` folder, so a
  source-free copy that ships only ``test/`` still loads its test split (and asking it for
  ``train`` reports the missing folder instead of treating ``test`` as a class).
* **Seeded split**: ``root/<class>/...`` (e.g. ``pins_Adriana Lima/Adriana Lima0_0.jpg``). Each
  class is split on its own: its files, sorted by path, are permuted by a ``torch.Generator``
  freshly seeded with ``seed`` and the first ``round(test_fraction * n)`` of the permutation
  (Python's ``round``: halves go to the even number) go to ``test``, but at least one and at
  most ``n - 1`` when the class has ``n >= 2`` images, so such a class is in both splits; a
  single image stays in ``train``. Because every class uses its own fresh generator, a class's
  split depends only on its file names and ``seed``: adding or removing another class changes
  nothing. The split is stratified by construction.

Class names are the class folder names sorted by Python's string order (code points, so
case-sensitive), label ``i`` being the ``i``-th name. In the fixed layout they are the union of
the class folders of ``train/`` and ``test/`` (those present), so both splits share one label
map. Hidden entries (names starting with ``.``) and files with other extensions are ignored;
images are found recursively inside a class folder.

Only the requested split's images are decoded (listing the other split's file names is all the
seeded split needs of it), so a source-free run never opens a training image.
"""

from __future__ import annotations

import logging
import struct
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image

from lit_unlearn.datamodules.images.base import ImageSet, ImageSource, Split
from lit_unlearn.datamodules.schema import DataFormatError
from lit_unlearn.datamodules.sources.base import DataNotFoundError

__all__ = ["DEFAULT_EXTENSIONS", "ImageFolder"]

logger = logging.getLogger(__name__)

#: Image file extensions read by default (matched case-insensitively).
DEFAULT_EXTENSIONS: tuple[str, ...] = (
    ".bmp",
    ".gif",
    ".jpeg",
    ".jpg",
    ".pgm",
    ".png",
    ".ppm",
    ".tif",
    ".tiff",
    ".webp",
)

# Pillow's decoders report broken files with many exception types (truncated data is an
# OSError, some plugins raise SyntaxError, struct.error or IndexError on bad headers).
_DECODE_ERRORS = (
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    IndexError,
    struct.error,
    Image.DecompressionBombError,
)


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


class ImageFolder(ImageSource):
    """An image classification dataset laid out as one folder per class.

    See the module docstring for the two layouts, how the seeded split is drawn and how class
    names are ordered. Images come back as ``uint8`` ``[N, C, H, W]``; ``ids`` are positions in
    the listing order (classes in name order, files sorted by path within a class), counted over
    the whole ``root`` in the seeded layout and within ``train/`` or ``test/`` in the fixed one.

    Args:
        root: Folder holding the class folders, or ``train/`` and ``test/`` with class folders.
        test_fraction: Share of each class put into ``test`` by the seeded split, in (0, 1).
            Ignored in the fixed layout.
        seed: Seed of the seeded split (the same ``seed`` and files give the same split).
        image_size: Resize every image to ``image_size x image_size`` (bilinear). ``None``: keep
            the stored size, which must then be the same for all images.
        channels: 1 (Pillow mode ``L``, grey) or 3 (``RGB``; alpha and palettes are dropped).
        extensions: File name endings to read (case-insensitive, with or without the dot);
            default :data:`DEFAULT_EXTENSIONS`.
    """

    name = "image_folder"

    def __init__(
        self,
        root: str,
        test_fraction: float = 0.2,
        seed: int = 0,
        image_size: int | None = None,
        channels: Literal[1, 3] = 3,
        extensions: list[str] | None = None,
    ) -> None:
        if not 0.0 < test_fraction < 1.0:
            raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
        if image_size is not None and image_size < 1:
            raise ValueError(f"image_size must be positive, got {image_size}")
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        exts = DEFAULT_EXTENSIONS if extensions is None else tuple(extensions)
        if not exts:
            raise ValueError("extensions must not be empty")
        self.root = Path(root)
        self.test_fraction = test_fraction
        self.seed = seed
        self.image_size = image_size
        self.channels = channels
        self.extensions = tuple(e.lower() if e.startswith(".") else "." + e.lower() for e in exts)

    # -- listing ------------------------------------------------------------------------------

    @property
    def fixed_split(self) -> bool:
        """Whether ``root`` uses the fixed ``train/`` + ``test/`` layout."""
        return (self.root / "train").is_dir() or (self.root / "test").is_dir()

    def _class_dirs(self, base: Path) -> list[Path]:
        if not base.is_dir():
            return []
        return sorted(
            (p for p in base.iterdir() if p.is_dir() and _visible(p)), key=lambda p: p.name
        )

    def _images_in(self, folder: Path) -> list[Path]:
        """The image files of one class folder, sorted by relative path; none is an error."""
        files = [
            p
            for p in folder.rglob("*")
            if p.suffix.lower() in self.extensions
            and p.is_file()
            and all(_visible(Path(part)) for part in p.relative_to(folder).parts)
        ]
        if not files:
            raise DataFormatError(
                f"{folder}: class folder holds no images (looked for {', '.join(self.extensions)})"
            )
        return sorted(files, key=lambda p: p.relative_to(folder).as_posix())

    def _no_classes(self, base: Path) -> DataNotFoundError:
        what = "does not exist" if not base.exists() else "holds no class folders"
        return DataNotFoundError(
            f"{self.name}: {base} {what}; expected one sub-folder of images per class "
            f"(root/<class>/<image>), or root/train/<class>/... and root/test/<class>/..."
        )

    def listing(self, split: Split) -> tuple[tuple[str, ...], list[tuple[Path, int, int]]]:
        """Class names and ``(path, label, id)`` of every image of ``split``, without decoding.

        Raises:
            DataNotFoundError: No class folders (or, in the fixed layout, no ``split`` folder).
            DataFormatError: A class folder of this split (seeded layout: any class folder)
                holds no images.
        """
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        if self.fixed_split:
            return self._fixed_files(split)
        return self._seeded_files(split)

    def _fixed_files(self, split: Split) -> tuple[tuple[str, ...], list[tuple[Path, int, int]]]:
        base = self.root / split
        dirs = self._class_dirs(base)
        if not dirs:
            raise self._no_classes(base)
        # Only the other split's folder *names* are read, so both splits share one label map.
        other = "test" if split == "train" else "train"
        names = sorted(
            {p.name for p in dirs} | {p.name for p in self._class_dirs(self.root / other)}
        )
        index = {n: i for i, n in enumerate(names)}
        files: list[tuple[Path, int, int]] = []
        for d in dirs:
            for path in self._images_in(d):
                files.append((path, index[d.name], len(files)))
        return tuple(names), files

    def _seeded_files(self, split: Split) -> tuple[tuple[str, ...], list[tuple[Path, int, int]]]:
        dirs = self._class_dirs(self.root)
        if not dirs:
            raise self._no_classes(self.root)
        files: list[tuple[Path, int, int]] = []
        offset = 0
        for label, d in enumerate(dirs):
            paths = self._images_in(d)
            n = len(paths)
            k = round(self.test_fraction * n)
            # Keep a class with >= 2 images in both splits; a single image stays in train.
            k = min(max(k, 1), n - 1) if n >= 2 else 0
            # A fresh generator per class: the split of a class does not depend on the others.
            gen = torch.Generator().manual_seed(self.seed)
            perm = torch.randperm(n, generator=gen)
            chosen = perm[:k] if split == "test" else perm[k:]
            for j in sorted(chosen.tolist()):
                files.append((paths[j], label, offset + j))
            offset += n
        return tuple(d.name for d in dirs), files

    # -- decoding -----------------------------------------------------------------------------

    def _decode(self, path: Path) -> np.ndarray:
        """One image as ``uint8 [C, H, W]``."""
        mode = "L" if self.channels == 1 else "RGB"
        try:
            with Image.open(path) as opened:
                img = opened.convert(mode)  # convert() decodes the pixels
            if self.image_size is not None and img.size != (self.image_size, self.image_size):
                img = img.resize((self.image_size, self.image_size), Image.Resampling.BILINEAR)
            arr = np.asarray(img, dtype=np.uint8)
        except _DECODE_ERRORS as err:
            raise DataFormatError(
                f"{path}: unreadable image ({type(err).__name__}: {err})"
            ) from err
        return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)

    def load(self, split: Split) -> ImageSet:
        """Decode the images of ``split`` (only those).

        Raises:
            DataNotFoundError: No class folders, or the fixed layout lacks the ``split`` folder.
            DataFormatError: An empty class folder, an unreadable image, images of different
                sizes without ``image_size``, or a split without images.
        """
        class_names, files = self.listing(split)
        if not files:
            raise DataFormatError(
                f"{self.root}: the {split} split has no images (every class has a single image, "
                "which the seeded split keeps in train)"
            )
        out: np.ndarray | None = None
        first: Path | None = None
        for i, (path, _, _) in enumerate(files):
            arr = self._decode(path)
            if out is None:
                # Allocate once from the first image's shape instead of stacking a list: peak
                # memory stays at one copy of the split.
                out = np.empty((len(files), *arr.shape), dtype=np.uint8)
                first = path
            elif arr.shape != out.shape[1:]:
                h, w = arr.shape[1:]
                eh, ew = out.shape[2:]
                raise DataFormatError(
                    f"{path}: image is {w}x{h} but {first} is {ew}x{eh}; all images must have "
                    "one size, or set image_size to resize them"
                )
            out[i] = arr
        assert out is not None
        return ImageSet(
            images=torch.from_numpy(out),
            labels=torch.tensor([f[1] for f in files], dtype=torch.int64),
            class_names=class_names,
            ids=torch.tensor([f[2] for f in files], dtype=torch.int64),
        )
