"""CIFAR-10 and CIFAR-100 from the official "python version" pickle batches.

Layout (as extracted from the official archives, into ``root``):

* CIFAR-10, ``cifar-10-python.tar.gz`` (md5 ``c58f30108f718f92721af3b95e74349a``):
  ``cifar-10-batches-py/data_batch_1`` .. ``data_batch_5`` (train, 10 000 images each, read in
  this order), ``test_batch`` (test) and ``batches.meta`` (``label_names``).
* CIFAR-100, ``cifar-100-python.tar.gz`` (md5 ``eb9058c3a382ffc7106e4002c42a8d85``):
  ``cifar-100-python/train``, ``test`` and ``meta`` (``fine_label_names``,
  ``coarse_label_names``).

Every batch is a pickled dict with ``bytes`` keys: ``b"data"``, a ``uint8`` array
``[N, 3072]`` whose rows hold the red, green and blue 32x32 planes one after the other (each
row-major), and ``b"labels"`` (CIFAR-10) or ``b"fine_labels"``/``b"coarse_labels"`` (CIFAR-100),
lists of ``N`` ints. A row therefore reshapes straight to ``[3, 32, 32]`` (channel, row, column).

The batches are unpickled with a *restricted* unpickler that resolves only the few numpy and
builtin names these files use (array reconstruction, dtypes, plain containers), so a tampered or
malicious file cannot run code while loading; anything else, and any corrupted, truncated or
wrongly structured batch, raises :class:`~lit_unlearn.datamodules.schema.DataFormatError` naming
the file and what is wrong.
"""

from __future__ import annotations

import _codecs  # the C module that protocol-2 pickles of bytes reference by this name
import importlib
import logging
import pickle
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch

from lit_unlearn.datamodules.download import ArchiveSpec, DownloadError, download_archive
from lit_unlearn.datamodules.images.base import ImageSet, ImageSource, Split
from lit_unlearn.datamodules.schema import DataFormatError
from lit_unlearn.datamodules.sources.base import DataNotFoundError

__all__ = ["CIFAR10", "CIFAR100"]

logger = logging.getLogger(__name__)

#: Bytes of one 32x32 RGB image in a batch row (3 planes of 32 * 32).
_ROW = 3 * 32 * 32


# ---------------------------------------------------------------------------------------------
# Restricted unpickling
# ---------------------------------------------------------------------------------------------


def _numpy_attr(module: str, name: str) -> Any:
    """``numpy._core.<module>.<name>`` (numpy 2), else ``numpy.core.<module>.<name>`` (numpy 1).

    Importing ``numpy._core`` first avoids numpy 2's deprecation warning for ``numpy.core``;
    numpy 1 has no ``numpy._core``.
    """
    try:
        mod = importlib.import_module(f"numpy._core.{module}")
    except ImportError:  # pragma: no cover - numpy 1
        mod = importlib.import_module(f"numpy.core.{module}")
    return getattr(mod, name)


def _allowed_globals() -> dict[tuple[str, str], Any]:
    """The only ``(module, name)`` globals a CIFAR batch may reference, and what they resolve to.

    The official files were written by Python 2 with numpy 1 (``numpy.core.multiarray``,
    ``__builtin__``); re-saved copies may come from numpy 2 (``numpy._core``), from Python 3
    protocol 2 (``_codecs.encode`` for bytes) or protocol 5 (``_frombuffer``). Every entry only
    builds data (arrays, dtypes, scalars, containers); none can call arbitrary code. Object
    arrays could only hold what this same unpickler resolves, so they add nothing.
    """
    reconstruct = _numpy_attr("multiarray", "_reconstruct")
    scalar = _numpy_attr("multiarray", "scalar")
    frombuffer = _numpy_attr("numeric", "_frombuffer")
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{core}.multiarray", "scalar")] = scalar
        allowed[(f"{core}.numeric", "_frombuffer")] = frombuffer
    allowed[("_codecs", "encode")] = _codecs.encode
    for builtins_name in ("builtins", "__builtin__"):
        for cls in (dict, list, tuple, set, frozenset, bytes, bytearray, str, int, float, bool):
            allowed[(builtins_name, cls.__name__)] = cls
    return allowed


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that refuses every global outside :func:`_allowed_globals`.

    ``find_class`` is the only way a pickle reaches callables (``os.system`` through
    ``__reduce__``, ``eval``, ...), so refusing unknown names there makes loading safe.
    Persistent ids are refused by the base class already.
    """

    _allowed: ClassVar[dict[tuple[str, str], Any] | None] = None

    def find_class(self, module: str, name: str) -> Any:
        if _RestrictedUnpickler._allowed is None:
            _RestrictedUnpickler._allowed = _allowed_globals()
        try:
            return _RestrictedUnpickler._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name} (not an array, dtype or container "
                "a CIFAR batch can hold)"
            ) from None


def _unpickle(path: Path) -> dict[bytes, Any]:
    """Read one batch or meta file as a dict with ``bytes`` keys.

    Raises:
        DataFormatError: The file does not unpickle (corrupt, truncated, a forbidden global) or
            is not a dict.
    """
    try:
        with path.open("rb") as f:
            # encoding="bytes": Python 2 ``str`` values (the keys, names) come back as bytes.
            obj = _RestrictedUnpickler(f, encoding="bytes").load()
    except OSError:
        raise  # an I/O problem is not a format problem
    except Exception as err:
        # Unpickling garbage can fail with almost any exception type (UnpicklingError,
        # EOFError, ValueError, KeyError, IndexError, TypeError, MemoryError, ...); each means
        # the file is not a valid batch.
        raise DataFormatError(
            f"{path}: not a readable CIFAR pickle ({type(err).__name__}: {err})"
        ) from err
    if not isinstance(obj, dict):
        raise DataFormatError(f"{path}: expected a pickled dict, got {type(obj).__name__}")
    return obj


def _get(batch: dict[bytes, Any], key: str, path: Path) -> Any:
    """``batch[key]``, accepting ``str`` keys too (batches re-saved by Python 3)."""
    for k in (key.encode(), key):
        if k in batch:
            return batch[k]
    keys = sorted(k.decode(errors="replace") if isinstance(k, bytes) else str(k) for k in batch)
    raise DataFormatError(f"{path}: missing key {key!r} (found keys {keys})")


def _names(batch: dict[bytes, Any], key: str, path: Path) -> tuple[str, ...]:
    """A list of class names from a meta file, decoded to ``str``."""
    raw = _get(batch, key, path)
    if not isinstance(raw, list | tuple) or not raw:
        raise DataFormatError(f"{path}: {key!r} must be a non-empty list of names")
    names: list[str] = []
    for value in raw:
        if isinstance(value, bytes):
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError as err:
                raise DataFormatError(f"{path}: {key!r} holds a non-UTF-8 name {value!r}") from err
        if not isinstance(value, str):
            raise DataFormatError(f"{path}: {key!r} holds a non-string {value!r}")
        names.append(value)
    if len(set(names)) != len(names):
        raise DataFormatError(f"{path}: {key!r} repeats names: {names}")
    return tuple(names)


def _read_batch(path: Path, label_key: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Images ``uint8 [N, 3, 32, 32]`` and labels ``int64 [N]`` of one batch file.

    Raises:
        DataFormatError: Unreadable, missing keys, data not ``uint8 [N, 3072]``, labels not ``N``
            integers in ``0..num_classes - 1``.
    """
    batch = _unpickle(path)
    data = _get(batch, "data", path)
    if not isinstance(data, np.ndarray):
        raise DataFormatError(f"{path}: 'data' must be a numpy array, got {type(data).__name__}")
    if data.dtype != np.uint8:
        raise DataFormatError(f"{path}: 'data' must be uint8, got {data.dtype}")
    if data.ndim != 2 or data.shape[1] != _ROW:
        raise DataFormatError(
            f"{path}: 'data' must be [N, {_ROW}] (32x32 RGB rows), got shape {data.shape}"
        )
    raw_labels = _get(batch, label_key, path)
    try:
        labels = np.asarray(raw_labels)
    except (ValueError, TypeError) as err:
        raise DataFormatError(f"{path}: {label_key!r} is not a list of integers ({err})") from err
    if labels.ndim != 1 or (labels.size and labels.dtype.kind not in "iu"):
        raise DataFormatError(
            f"{path}: {label_key!r} must be a flat list of integers, got {labels.dtype} "
            f"with shape {labels.shape}"
        )
    if len(labels) != len(data):
        raise DataFormatError(
            f"{path}: {len(labels)} labels in {label_key!r} but {len(data)} rows of 'data'"
        )
    labels = labels.astype(np.int64, copy=False)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        bad = int(labels[(labels < 0) | (labels >= num_classes)][0])
        raise DataFormatError(
            f"{path}: label {bad} in {label_key!r} is out of range 0..{num_classes - 1}"
        )
    # A row is the R, G and B planes, each 32x32 row-major: exactly C, H, W order.
    return data.reshape(-1, 3, 32, 32), labels


class _CIFAR(ImageSource):
    """Shared logic: which files a split needs, download when missing, reading the batches."""

    #: Official archive (tests replace it with a local one).
    archive: ClassVar[ArchiveSpec]
    #: Folder the archive extracts to, under ``root``.
    folder_name: ClassVar[str]

    def __init__(self, root: str, download: bool) -> None:
        self.root = Path(root)
        self.download = download

    @property
    def folder(self) -> Path:
        return self.root / self.folder_name

    def split_files(self, split: Split) -> list[Path]:
        """Every file :meth:`load` opens for ``split`` (batches then the meta file)."""
        raise NotImplementedError

    def _read(self, split: Split) -> ImageSet:
        raise NotImplementedError

    def load(self, split: Split) -> ImageSet:
        """Load ``split``; download the archive first if its files are missing and allowed.

        Raises:
            DataNotFoundError: Files missing and not downloadable (names them, the URL, the md5
                and where to put the archive or folder).
            DataFormatError: A file is corrupt or of the wrong structure.
        """
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        self._prepare(split)
        return self._read(split)

    def _missing(self, split: Split) -> list[Path]:
        return [p for p in self.split_files(split) if not p.is_file()]

    def _prepare(self, split: Split) -> None:
        # Only this split's files decide: a source-free copy with just the test files present
        # must neither download nor look at training batches.
        missing = self._missing(split)
        if not missing:
            return
        if not self.download:
            raise DataNotFoundError(self.missing_message(split, missing, "download disabled"))
        try:
            download_archive(self.archive, self.root)
        except DownloadError as err:
            raise DataNotFoundError(
                self.missing_message(split, missing, f"download failed: {err}")
            ) from err
        missing = self._missing(split)
        if missing:
            raise DataNotFoundError(
                self.missing_message(
                    split, missing, f"{self.archive.filename} was extracted but lacks them"
                )
            )

    def missing_message(self, split: Split, missing: list[Path], reason: str | None) -> str:
        """Error text naming each missing file, the official archive and where it goes."""
        spec = self.archive
        lines = [
            f"{self.name} ({split} split): missing file(s):",
            *(f"  {p}" for p in missing),
            f"Download {spec.url} (md5 {spec.md5}) and extract it into {self.root} so that "
            f"{self.folder} holds these files, or put {spec.filename} into {self.root} and run "
            "again with download enabled.",
        ]
        if reason:
            lines.append(f"({reason})")
        return "\n".join(lines)


def _image_set(
    parts: list[tuple[np.ndarray, np.ndarray]], class_names: tuple[str, ...]
) -> ImageSet:
    """Concatenate batches in file order; ids are positions in that order."""
    if len(parts) == 1:
        images, labels = parts[0]
    else:
        images = np.concatenate([p[0] for p in parts])
        labels = np.concatenate([p[1] for p in parts])
    # torch.from_numpy needs a writable, contiguous array (protocol-5 arrays are read-only views
    # of the pickle's bytes); copying only then keeps the common case copy-free.
    if not images.flags.writeable or not images.flags.c_contiguous:
        images = np.array(images, order="C", copy=True)
    if not labels.flags.writeable:
        labels = labels.copy()
    return ImageSet(
        images=torch.from_numpy(images),
        labels=torch.from_numpy(labels),
        class_names=class_names,
        ids=torch.arange(len(labels), dtype=torch.int64),
    )


class CIFAR10(_CIFAR):
    """CIFAR-10: 50 000 train and 10 000 test 32x32 RGB images in 10 classes.

    Reads ``root/cifar-10-batches-py/``: ``data_batch_1`` .. ``data_batch_5`` for ``train``
    (concatenated in that order, so ids 0..49 999 follow the official order) and ``test_batch``
    for ``test`` (ids 0..9 999); class names come from ``batches.meta`` (``label_names``). A split
    opens only its own batch and the meta file, so ``test`` loads with the training batches
    absent. Images are ``uint8`` ``[N, 3, 32, 32]``.

    Args:
        root: Folder that holds ``cifar-10-batches-py/``; the official archive
            (https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz, md5
            ``c58f30108f718f92721af3b95e74349a``) is downloaded and extracted into it when the
            requested split's files are missing, or taken from ``root/cifar-10-python.tar.gz``
            if placed there by hand.
        download: Allow the download; when off (or it fails) missing files raise
            ``DataNotFoundError`` saying which files to put where.
    """

    name = "cifar10"
    archive = ArchiveSpec(
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        filename="cifar-10-python.tar.gz",
        md5="c58f30108f718f92721af3b95e74349a",
    )
    folder_name = "cifar-10-batches-py"

    def __init__(self, root: str = "data/cifar", download: bool = True) -> None:
        super().__init__(root, download)

    def _batches(self, split: Split) -> list[Path]:
        if split == "train":
            return [self.folder / f"data_batch_{i}" for i in range(1, 6)]
        return [self.folder / "test_batch"]

    def split_files(self, split: Split) -> list[Path]:
        return [*self._batches(split), self.folder / "batches.meta"]

    def _read(self, split: Split) -> ImageSet:
        meta = self.folder / "batches.meta"
        class_names = _names(_unpickle(meta), "label_names", meta)
        parts = [_read_batch(p, "labels", len(class_names)) for p in self._batches(split)]
        return _image_set(parts, class_names)


class CIFAR100(_CIFAR):
    """CIFAR-100: 50 000 train and 10 000 test 32x32 RGB images, 100 fine or 20 coarse classes.

    Reads ``root/cifar-100-python/``: ``train`` or ``test`` (ids are positions in that file),
    class names from ``meta`` (``fine_label_names`` or ``coarse_label_names``). A split opens
    only its own file and ``meta``. Images are ``uint8`` ``[N, 3, 32, 32]``.

    Args:
        root: Folder that holds ``cifar-100-python/``; the official archive
            (https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz, md5
            ``eb9058c3a382ffc7106e4002c42a8d85``) is downloaded and extracted into it when the
            requested split's files are missing, or taken from ``root/cifar-100-python.tar.gz``
            if placed there by hand.
        download: Allow the download; when off (or it fails) missing files raise
            ``DataNotFoundError`` saying which files to put where.
        label: ``"fine"`` (100 classes) or ``"coarse"`` (20 superclasses).
    """

    name = "cifar100"
    archive = ArchiveSpec(
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        filename="cifar-100-python.tar.gz",
        md5="eb9058c3a382ffc7106e4002c42a8d85",
    )
    folder_name = "cifar-100-python"

    def __init__(
        self,
        root: str = "data/cifar",
        download: bool = True,
        label: Literal["fine", "coarse"] = "fine",
    ) -> None:
        if label not in ("fine", "coarse"):
            raise ValueError(f"label must be 'fine' or 'coarse', got {label!r}")
        super().__init__(root, download)
        self.label = label

    def split_files(self, split: Split) -> list[Path]:
        return [self.folder / split, self.folder / "meta"]

    def _read(self, split: Split) -> ImageSet:
        meta = self.folder / "meta"
        class_names = _names(_unpickle(meta), f"{self.label}_label_names", meta)
        part = _read_batch(self.folder / split, f"{self.label}_labels", len(class_names))
        return _image_set([part], class_names)
