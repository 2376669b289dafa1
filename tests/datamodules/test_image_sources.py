"""CIFAR pickle batches and image folders, written tiny in tmp_path: never the network."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import socket
import struct
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from lit_unlearn.datamodules import download as dl
from lit_unlearn.datamodules.download import ArchiveSpec, DownloadError
from lit_unlearn.datamodules.images import CIFAR10, CIFAR100, ImageFolder, ImageSet, Split
from lit_unlearn.datamodules.schema import DataFormatError
from lit_unlearn.datamodules.sources.base import DataNotFoundError
from tests.datamodules.cifar_files import (
    COARSE_OF_FINE,
    batch,
    dump,
    rows,
    write_cifar10,
    write_cifar100,
)

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR100_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
CIFAR100_MD5 = "eb9058c3a382ffc7106e4002c42a8d85"


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("tests must not use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)


# ---------------------------------------------------------------------------------------------
# Archives and downloads of the tiny CIFAR folders (written by tests/datamodules/cifar_files.py)
# ---------------------------------------------------------------------------------------------


def make_tar_gz(path: Path, folder: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tf:
        tf.add(folder, arcname=folder.name)
    return path


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def fail_fetch(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []

    def fetch(url: str, dest: Path, timeout: float = 30.0) -> None:
        calls.append(url)
        raise DownloadError(f"could not download {url}: no network in tests")

    monkeypatch.setattr(dl, "fetch", fetch)
    return calls


# ---------------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100 reading
# ---------------------------------------------------------------------------------------------


def test_cifar10_train_and_test(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    src = CIFAR10(root=str(tmp_path), download=False)
    train = src.load("train")
    assert isinstance(train, ImageSet)
    assert train.images.shape == (10, 3, 32, 32) and train.images.dtype == torch.uint8
    assert train.labels.dtype == torch.int64 and train.ids.dtype == torch.int64
    assert train.class_names == ("airplane", "automobile", "bird", "cat", "deer")
    # Batches concatenated 1..5: row order and ids follow the official order.
    assert train.images[:, 0, 0, 0].tolist() == list(range(10))
    assert train.ids.tolist() == list(range(10))
    assert train.labels.tolist() == [i % 5 for i in range(10)]
    test = src.load("test")
    assert test.images.shape == (3, 3, 32, 32)
    assert test.labels.tolist() == [1, 2, 3]
    assert test.ids.tolist() == [0, 1, 2]
    assert test.images[:, 0, 0, 0].tolist() == [100, 101, 102]


def test_cifar_pixel_layout(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    images = CIFAR10(str(tmp_path), download=False).load("test").images
    # Byte 1024 + 5 * 32 + 7 is the green plane, row 5, column 7.
    assert (images[:, 1, 5, 7] == 200).all()
    assert int(images[:, 1].sum()) == 3 * 200
    assert int(images[:, 2].sum()) == 0
    assert (images[:, 0, 5, 7] == 0).all() and (images[:, 1, 7, 5] == 0).all()


def test_cifar100_fine_and_coarse(tmp_path: Path) -> None:
    write_cifar100(tmp_path)
    fine = CIFAR100(str(tmp_path), download=False).load("train")
    assert fine.images.shape == (4, 3, 32, 32) and fine.images.dtype == torch.uint8
    assert fine.class_names == ("apple", "aquarium_fish", "baby", "bear")
    assert fine.labels.tolist() == [0, 1, 2, 3]
    assert fine.ids.tolist() == [0, 1, 2, 3]
    coarse = CIFAR100(str(tmp_path), download=False, label="coarse").load("test")
    assert coarse.class_names == ("fruit", "fish", "people")
    assert coarse.labels.tolist() == [COARSE_OF_FINE[f] for f in (3, 2, 1)]
    assert coarse.images[:, 0, 0, 0].tolist() == [100, 101, 102]
    assert (coarse.images[:, 1, 5, 7] == 200).all()


def test_cifar100_rejects_unknown_label_kind() -> None:
    with pytest.raises(ValueError, match="fine"):
        CIFAR100("x", label="medium")  # type: ignore[arg-type]


@pytest.mark.parametrize("cls", [CIFAR10, CIFAR100])
def test_test_split_without_training_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cls: type[CIFAR10] | type[CIFAR100]
) -> None:
    if cls is CIFAR10:
        folder = write_cifar10(tmp_path)
        train_files = [folder / f"data_batch_{i}" for i in range(1, 6)]
    else:
        folder = write_cifar100(tmp_path)
        train_files = [folder / "train"]
    for p in train_files:
        p.unlink()
    calls = fail_fetch(monkeypatch)
    opened: list[str] = []
    real_open = Path.open

    def spy(self: Path, *args: Any, **kwargs: Any) -> Any:
        opened.append(self.name)
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", spy)
    src = cls(str(tmp_path))
    assert len(src.load("test")) == 3
    assert not calls, "the test split is complete: no download"
    assert not {p.name for p in train_files} & set(opened)
    with pytest.raises(DataNotFoundError) as info:
        src.load("train")
    message = str(info.value)
    for p in train_files:
        assert str(p) in message
    assert calls == [cls.archive.url]


def test_missing_files_offline_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = fail_fetch(monkeypatch)
    with pytest.raises(DataNotFoundError) as info:
        CIFAR10(str(tmp_path / "data")).load("test")
    message = str(info.value)
    folder = tmp_path / "data" / "cifar-10-batches-py"
    assert str(folder / "test_batch") in message and str(folder / "batches.meta") in message
    assert "data_batch_1" not in message, "only the requested split's files are named"
    assert CIFAR10_URL in message and CIFAR10_MD5 in message
    assert "cifar-10-python.tar.gz" in message and str(tmp_path / "data") in message
    assert "download failed" in message and calls == [CIFAR10_URL]


def test_download_disabled_never_fetches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = fail_fetch(monkeypatch)
    with pytest.raises(DataNotFoundError) as info:
        CIFAR100(str(tmp_path), download=False).load("train")
    message = str(info.value)
    assert str(tmp_path / "cifar-100-python" / "train") in message
    assert CIFAR100_URL in message and CIFAR100_MD5 in message
    assert "download disabled" in message and not calls


def test_published_archives() -> None:
    assert CIFAR10.archive == ArchiveSpec(
        url=CIFAR10_URL, filename="cifar-10-python.tar.gz", md5=CIFAR10_MD5
    )
    assert CIFAR100.archive == ArchiveSpec(
        url=CIFAR100_URL, filename="cifar-100-python.tar.gz", md5=CIFAR100_MD5
    )


def test_hand_placed_archive_with_wrong_checksum(tmp_path: Path) -> None:
    write_cifar10(tmp_path / "build")
    root = tmp_path / "data"
    # The real published md5 cannot match this tiny archive: it must be reported, not used.
    archive = make_tar_gz(
        root / "cifar-10-python.tar.gz", tmp_path / "build" / "cifar-10-batches-py"
    )
    with pytest.raises(DataNotFoundError, match="checksum mismatch"):
        CIFAR10(str(root)).load("test")
    assert archive.exists(), "a hand-placed archive is left alone"
    assert not (root / "cifar-10-batches-py").exists()


def test_download_end_to_end_from_file_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_cifar10(tmp_path / "build")
    archive = make_tar_gz(
        tmp_path / "server" / "cifar-10-python.tar.gz", tmp_path / "build" / "cifar-10-batches-py"
    )
    spec = ArchiveSpec(url=archive.as_uri(), filename=archive.name, md5=md5(archive))
    monkeypatch.setattr(CIFAR10, "archive", spec)
    root = tmp_path / "data"
    test = CIFAR10(str(root)).load("test")
    assert test.images[:, 0, 0, 0].tolist() == [100, 101, 102]
    assert (root / "cifar-10-batches-py" / "data_batch_5").is_file()
    assert not (root / archive.name).exists(), "downloaded archive removed after extraction"
    assert len(CIFAR10(str(root), download=False).load("train")) == 10


def test_hand_placed_archive_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fail_fetch(monkeypatch)
    write_cifar100(tmp_path / "build")
    root = tmp_path / "data"
    archive = make_tar_gz(root / "cifar-100-python.tar.gz", tmp_path / "build" / "cifar-100-python")
    monkeypatch.setattr(
        CIFAR100, "archive", ArchiveSpec(url=CIFAR100_URL, filename=archive.name, md5=md5(archive))
    )
    train = CIFAR100(str(root)).load("train")
    assert train.labels.tolist() == [0, 1, 2, 3]
    assert archive.exists()


# ---------------------------------------------------------------------------------------------
# Corrupt and malicious batches
# ---------------------------------------------------------------------------------------------


class _Evil:
    """Unpickling this calls ``os.system`` unless the unpickler refuses the global."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def _good_test_batch() -> dict[bytes, Any]:
    return batch(rows(3, 0), [0, 1, 2])


@pytest.mark.parametrize(
    ("case", "match"),
    [
        ("truncated", "not a readable CIFAR pickle"),
        ("garbage", "not a readable CIFAR pickle"),
        ("empty", "not a readable CIFAR pickle"),
        ("not_dict", "expected a pickled dict"),
        ("wrong_keys", "missing key 'labels'"),
        ("no_data", "missing key 'data'"),
        ("short_row", r"must be \[N, 3072\]"),
        ("not_array", "must be a numpy array"),
        ("float_data", "must be uint8"),
        ("label_out_of_range", "label 5 .* out of range 0..4"),
        ("negative_label", "label -1 .* out of range"),
        ("label_count", "2 labels .* but 3 rows"),
        ("string_labels", "flat list of integers"),
        ("evil", "refusing to load global"),
    ],
)
def test_corrupt_batches(tmp_path: Path, case: str, match: str) -> None:
    folder = write_cifar10(tmp_path)
    path = folder / "test_batch"
    marker = tmp_path / "pwned"
    good = pickle.dumps(_good_test_batch())
    content: bytes
    if case == "truncated":
        content = good[: len(good) // 2]
    elif case == "garbage":
        content = b"\x00not a pickle at all\xff" * 10
    elif case == "empty":
        content = b""
    else:
        obj: object = _good_test_batch()
        assert isinstance(obj, dict)
        if case == "not_dict":
            obj = [1, 2, 3]
        elif case == "wrong_keys":
            obj = {b"data": rows(3, 0), b"fine_labels": [0, 1, 2]}
        elif case == "no_data":
            del obj[b"data"]
        elif case == "short_row":
            obj[b"data"] = np.zeros((3, 3071), dtype=np.uint8)
        elif case == "not_array":
            obj[b"data"] = [[0] * 3072] * 3
        elif case == "float_data":
            obj[b"data"] = np.zeros((3, 3072), dtype=np.float32)
        elif case == "label_out_of_range":
            obj[b"labels"] = [0, 5, 1]
        elif case == "negative_label":
            obj[b"labels"] = [0, -1, 1]
        elif case == "label_count":
            obj[b"labels"] = [0, 1]
        elif case == "string_labels":
            obj[b"labels"] = [b"cat", b"dog", b"cow"]
        elif case == "evil":
            obj[b"batch_label"] = _Evil(marker)
        content = pickle.dumps(obj)
    path.write_bytes(content)
    with pytest.raises(DataFormatError, match=match) as info:
        CIFAR10(str(tmp_path), download=False).load("test")
    assert str(path) in str(info.value)
    assert not marker.exists(), "the malicious pickle must not run"


def test_corrupt_meta(tmp_path: Path) -> None:
    folder = write_cifar10(tmp_path)
    dump(folder / "batches.meta", {b"label_names": [b"a", b"a"]})
    with pytest.raises(DataFormatError, match="repeats names"):
        CIFAR10(str(tmp_path), download=False).load("test")
    dump(folder / "batches.meta", {b"num_vis": 3072})
    with pytest.raises(DataFormatError, match=r"batches\.meta: missing key 'label_names'"):
        CIFAR10(str(tmp_path), download=False).load("test")


def test_protocol_2_and_5_batches_load(tmp_path: Path) -> None:
    """Re-saved batches (protocol 2 bytes via _codecs, protocol 5 read-only arrays) still load."""
    folder = write_cifar10(tmp_path)
    for protocol in (2, 5):
        (folder / "test_batch").write_bytes(pickle.dumps(_good_test_batch(), protocol=protocol))
        test = CIFAR10(str(tmp_path), download=False).load("test")
        assert test.images[:, 0, 0, 0].tolist() == [0, 1, 2]
        assert (test.images[:, 1, 5, 7] == 200).all()


# The pure-Python pickler, whose per-type ``dispatch`` table can be overridden (Any: typeshed
# does not describe its internals).
_PurePickler: Any = pickle.__dict__["_Pickler"]


class _Py2Pickler(_PurePickler):
    """Writes ``bytes`` and ``str`` as Python 2 ``str`` (BINSTRING), like the official files."""

    dispatch = _PurePickler.dispatch.copy()

    def save_py2_str(self, obj: bytes | str) -> None:
        raw = obj.encode("latin-1") if isinstance(obj, str) else obj
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str
    dispatch[str] = save_py2_str


def test_python2_numpy1_batch_loads(tmp_path: Path) -> None:
    """The official files come from Python 2 + numpy 1: BINSTRING data, ``numpy.core`` globals."""
    folder = write_cifar10(tmp_path)
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(_good_test_batch())
    # Protocol 2 has no frames and GLOBAL names end at a newline: renaming needs nothing else.
    data = buf.getvalue().replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert b"numpy.core.multiarray\n_reconstruct" in data and b"_codecs" not in data
    (folder / "test_batch").write_bytes(data)
    test = CIFAR10(str(tmp_path), download=False).load("test")
    assert test.images[:, 0, 0, 0].tolist() == [0, 1, 2]
    assert (test.images[:, 1, 5, 7] == 200).all()


# ---------------------------------------------------------------------------------------------
# ImageFolder
# ---------------------------------------------------------------------------------------------


def png(path: Path, value: int, size: tuple[int, int] = (4, 4), mode: str = "RGB") -> Path:
    """A solid image: RGB ``(value, value // 2, 0)``, grey ``value``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    color: int | tuple[int, ...] = value if mode in ("L", "P") else (value, value // 2, 0)
    if mode == "RGBA":
        color = (value, value // 2, 0, 255)
    Image.new(mode, size, color).save(path)
    return path


def make_classes(base: Path, counts: dict[str, int], size: tuple[int, int] = (4, 4)) -> None:
    for c, (name, n) in enumerate(counts.items()):
        for i in range(n):
            png(base / name / f"img_{i:02d}.png", 10 * c + i, size)


COUNTS = {"pins_Zoe": 5, "pins_Adriana Lima": 10, "pins_bob": 3, "pins_Mia": 1}


def test_folder_class_order_and_seeded_split(tmp_path: Path) -> None:
    make_classes(tmp_path, COUNTS)
    src = ImageFolder(str(tmp_path), test_fraction=0.2, seed=3)
    train, test = src.load("train"), src.load("test")
    names = ("pins_Adriana Lima", "pins_Mia", "pins_Zoe", "pins_bob")  # code-point order
    assert train.class_names == names and test.class_names == names
    # Per class: round(0.2 * n), at least 1 for n >= 2, none for the single image.
    assert test.class_counts().tolist() == [2, 0, 1, 1]
    assert train.class_counts().tolist() == [8, 1, 4, 2]
    assert train.images.dtype == torch.uint8 and train.images.shape[1:] == (3, 4, 4)
    # ids index the whole listing; the splits partition it.
    all_ids = sorted(train.ids.tolist() + test.ids.tolist())
    assert all_ids == list(range(19))
    again = ImageFolder(str(tmp_path), test_fraction=0.2, seed=3).load("test")
    assert again.ids.tolist() == test.ids.tolist()
    other = [ImageFolder(str(tmp_path), seed=s).load("test").ids.tolist() for s in range(6)]
    assert len({tuple(o) for o in other}) > 1, "the seed changes the split"
    # Pixels: image i of the c-th written class is (10c + i, (10c + i) // 2, 0); Adriana is the
    # second written class and its img_00 (id 0) is in one of the splits.
    where = train if 0 in train.ids.tolist() else test
    img = where.images[where.ids.tolist().index(0)]
    assert img[0].eq(10).all() and img[1].eq(5).all() and img[2].eq(0).all()


def test_folder_split_is_per_class(tmp_path: Path) -> None:
    """Adding a class leaves the others' splits unchanged (one fresh generator per class)."""
    make_classes(tmp_path, {"a": 6, "b": 7})
    before = ImageFolder(str(tmp_path), test_fraction=0.5).load("test")
    make_classes(tmp_path, {"a": 6, "b": 7, "c": 4})
    after = ImageFolder(str(tmp_path), test_fraction=0.5).load("test")
    assert after.ids[after.labels < 2].tolist() == before.ids.tolist()


def test_folder_fixed_layout(tmp_path: Path) -> None:
    make_classes(tmp_path / "train", {"cat": 3, "dog": 2})
    make_classes(tmp_path / "test", {"dog": 1, "emu": 2})
    src = ImageFolder(str(tmp_path), test_fraction=0.5)
    train, test = src.load("train"), src.load("test")
    assert train.class_names == test.class_names == ("cat", "dog", "emu")
    assert train.labels.tolist() == [0, 0, 0, 1, 1] and train.ids.tolist() == [0, 1, 2, 3, 4]
    assert test.labels.tolist() == [1, 2, 2] and test.ids.tolist() == [0, 1, 2]


def test_folder_test_only_copy(tmp_path: Path) -> None:
    make_classes(tmp_path / "test", {"cat": 1, "dog": 2})
    src = ImageFolder(str(tmp_path))
    assert src.load("test").class_names == ("cat", "dog")
    with pytest.raises(DataNotFoundError, match="train does not exist"):
        src.load("train")


def test_folder_resize_and_channels(tmp_path: Path) -> None:
    png(tmp_path / "a" / "x.png", 100, (6, 4))
    png(tmp_path / "a" / "y.png", 50, (3, 9), mode="L")
    png(tmp_path / "b" / "z.png", 80, (5, 5), mode="RGBA")
    png(tmp_path / "b" / "w.png", 80, (5, 5), mode="P")
    rgb = ImageFolder(str(tmp_path), image_size=8, test_fraction=0.5)
    train = rgb.load("train")
    assert train.images.shape[1:] == (3, 8, 8)
    grey = ImageFolder(str(tmp_path), image_size=2, channels=1, test_fraction=0.5).load("test")
    assert grey.images.shape[1:] == (1, 2, 2) and grey.images.dtype == torch.uint8
    solid = ImageFolder(str(tmp_path), image_size=3, test_fraction=0.5)
    both = [solid.load("train"), solid.load("test")]
    for s in both:
        for img, i in zip(s.images, s.ids.tolist(), strict=True):
            if i == 0:  # a/x.png: solid (100, 50, 0) survives bilinear resizing
                assert img[0].eq(100).all() and img[1].eq(50).all() and img[2].eq(0).all()


def test_folder_extensions_and_hidden(tmp_path: Path) -> None:
    png(tmp_path / "a" / "x.PNG", 1)
    png(tmp_path / "a" / "._x.png", 2)
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    png(tmp_path / "b" / "y.png", 3)
    png(tmp_path / ".cache" / "z.png", 4)
    src = ImageFolder(str(tmp_path), extensions=["png"])
    assert src.load("train").class_names == ("a", "b")
    assert len(src.load("train")) == 2
    with pytest.raises(DataFormatError, match="holds no images"):
        ImageFolder(str(tmp_path), extensions=["jpg"]).load("train")


def test_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match="does not exist"):
        ImageFolder(str(tmp_path / "nope")).load("train")
    (tmp_path / "empty_root").mkdir()
    with pytest.raises(DataNotFoundError, match="holds no class folders"):
        ImageFolder(str(tmp_path / "empty_root")).load("test")
    make_classes(tmp_path / "r", {"a": 2})
    (tmp_path / "r" / "b").mkdir()
    with pytest.raises(DataFormatError, match=r"r/b: class folder holds no images"):
        ImageFolder(str(tmp_path / "r")).load("test")
    with pytest.raises(ValueError, match="test_fraction"):
        ImageFolder(str(tmp_path), test_fraction=1.0)


def test_folder_unreadable_image(tmp_path: Path) -> None:
    make_classes(tmp_path, {"a": 2, "b": 2})
    bad = tmp_path / "a" / "img_01.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    src = ImageFolder(str(tmp_path), test_fraction=0.5)
    in_test = bad in [p for p, _, _ in src.listing("test")[1]]
    split: Split = "test" if in_test else "train"
    other: Split = "train" if in_test else "test"
    with pytest.raises(DataFormatError, match="unreadable image") as info:
        src.load(split)
    assert str(bad) in str(info.value)
    assert len(src.load(other)) == 2, "the other split never decodes the broken file"


def test_folder_mixed_sizes(tmp_path: Path) -> None:
    make_classes(tmp_path, {"a": 2})
    odd = png(tmp_path / "b" / "odd.png", 5, (4, 5))
    with pytest.raises(DataFormatError, match=r"4x5 but .* is 4x4") as info:
        ImageFolder(str(tmp_path), test_fraction=0.5).load("train")
    assert str(odd) in str(info.value)
    assert len(ImageFolder(str(tmp_path), test_fraction=0.5, image_size=4).load("train")) == 2


def test_folder_test_split_decodes_no_training_image(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_classes(tmp_path, {"a": 5, "b": 4})
    src = ImageFolder(str(tmp_path), test_fraction=0.4, seed=1)
    opened: list[str] = []
    real_open = Image.open

    def spy(fp: Any, *args: Any, **kwargs: Any) -> Any:
        opened.append(str(fp))
        return real_open(fp, *args, **kwargs)

    monkeypatch.setattr(Image, "open", spy)
    _, test_files = src.listing("test")
    _, train_files = src.listing("train")
    assert not opened, "listing decodes nothing"
    test = src.load("test")
    assert len(test) == 2 + 2
    assert sorted(opened) == sorted(str(p) for p, _, _ in test_files)
    assert not set(opened) & {str(p) for p, _, _ in train_files}


def test_folder_fixed_test_split_opens_only_test(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_classes(tmp_path / "train", {"a": 2, "b": 2})
    make_classes(tmp_path / "test", {"a": 1, "b": 1})
    opened: list[str] = []
    real_open = Image.open

    def spy(fp: Any, *args: Any, **kwargs: Any) -> Any:
        opened.append(str(fp))
        return real_open(fp, *args, **kwargs)

    monkeypatch.setattr(Image, "open", spy)
    assert len(ImageFolder(str(tmp_path)).load("test")) == 2
    assert opened and all(str(tmp_path / "test") in p for p in opened)
