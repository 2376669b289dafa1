"""Download, checksum and extraction logic, served from local files: never the network."""

from __future__ import annotations

import hashlib
import io
import socket
import tarfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pytest

from lit_unlearn.datamodules import download as dl
from lit_unlearn.datamodules.download import (
    ArchiveSpec,
    ChecksumError,
    DownloadError,
    UnsafeArchiveError,
    download_archive,
    extract_archive,
    fetch,
)
from lit_unlearn.datamodules.sources import DataNotFoundError, LastFM1K, MovieLens1M, MovieLens100K

U_DATA = "1\t10\t5\t100\n2\t20\t3\t200\n"
U_USER = "1|24|M|technician|85711\n2|53|F|other|94043\n"


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("tests must not use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def make_zip(path: Path, members: dict[str, str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in members.items():
            zf.writestr(name, text)
    return path


def ml100k_zip(tmp_path: Path) -> Path:
    return make_zip(
        tmp_path / "server" / "ml-100k.zip",
        {"ml-100k/u.data": U_DATA, "ml-100k/u.user": U_USER, "ml-100k/README": "readme"},
    )


def serve(
    monkeypatch: pytest.MonkeyPatch, cls: type, archive: Path, **digests: object
) -> ArchiveSpec:
    spec = ArchiveSpec(url=archive.as_uri(), filename=archive.name, **digests)  # type: ignore[arg-type]
    monkeypatch.setattr(cls, "archive", spec)
    return spec


def test_published_movielens_checksums() -> None:
    assert MovieLens100K.archive is not None and MovieLens1M.archive is not None
    assert MovieLens100K.archive.md5 == "0e33842e24a9c977be4e0107933c0723"
    assert MovieLens1M.archive.md5 == "c4d9eecfca2ab87c1945afe126590906"
    assert MovieLens100K.archive.url == "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
    assert LastFM1K.archive is not None and LastFM1K.archive.member_md5


def test_prepare_downloads_verifies_and_extracts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = ml100k_zip(tmp_path)
    serve(monkeypatch, MovieLens100K, archive, md5=md5(archive))
    root = tmp_path / "data"
    src = MovieLens100K(str(root))
    src.prepare()
    assert (root / "ml-100k" / "u.data").read_text() == U_DATA
    assert (root / "ml-100k" / "README").exists()
    assert not (root / "ml-100k.zip").exists()  # downloaded archive removed after extraction
    assert sorted(p.name for p in root.iterdir()) == ["ml-100k"]  # no temp folders left
    assert src.load_interactions()["item"].tolist() == ["10", "20"]
    assert src.load_users()["gender"].tolist() == ["M", "F"]


def test_prepare_checksum_mismatch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    serve(monkeypatch, MovieLens100K, ml100k_zip(tmp_path), md5="0" * 32)
    root = tmp_path / "data"
    with pytest.raises(DataNotFoundError) as err:
        MovieLens100K(str(root)).prepare()
    msg = str(err.value)
    assert "checksum mismatch" in msg and "expected md5 " + "0" * 32 in msg
    assert "removed it" in msg
    assert str(root / "ml-100k" / "u.data") in msg
    assert isinstance(err.value.__cause__, ChecksumError)
    assert list(root.iterdir()) == []  # neither the partial download nor any extracted file


def test_sha256_is_checked(tmp_path: Path) -> None:
    archive = ml100k_zip(tmp_path)
    good = hashlib.sha256(archive.read_bytes()).hexdigest()
    download_archive(ArchiveSpec(archive.as_uri(), "ml-100k.zip", sha256=good), tmp_path / "a")
    assert (tmp_path / "a" / "ml-100k" / "u.user").exists()
    with pytest.raises(ChecksumError, match="expected sha256"):
        download_archive(
            ArchiveSpec(archive.as_uri(), "ml-100k.zip", sha256="1" * 64), tmp_path / "b"
        )


def test_prepare_without_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(url: str, timeout: float) -> None:
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    root = tmp_path / "data"
    with pytest.raises(DataNotFoundError) as err:
        MovieLens100K(str(root)).prepare()
    msg = str(err.value)
    assert str(root / "ml-100k" / "u.data") in msg and str(root / "ml-100k" / "u.user") in msg
    assert f"extract it into {root}" in msg
    assert "https://files.grouplens.org/datasets/movielens/ml-100k.zip" in msg
    assert "name resolution" in msg
    assert not list(root.glob("*.part"))


def test_prepare_download_disabled_never_fetches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("fetch called")

    monkeypatch.setattr(dl, "fetch", never)
    with pytest.raises(DataNotFoundError, match="download disabled"):
        MovieLens1M(str(tmp_path)).prepare(download=False)


def test_hand_placed_archive_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = ml100k_zip(tmp_path)
    serve(monkeypatch, MovieLens100K, archive, md5=md5(archive))
    root = tmp_path / "data"
    root.mkdir()
    (root / "ml-100k.zip").write_bytes(archive.read_bytes())

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("fetch called")

    monkeypatch.setattr(dl, "fetch", never)
    MovieLens100K(str(root)).prepare()
    assert (root / "ml-100k" / "u.data").exists()
    assert (root / "ml-100k.zip").exists()  # the user's file is kept


def test_hand_placed_archive_with_bad_checksum_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = ml100k_zip(tmp_path)
    serve(monkeypatch, MovieLens100K, archive, md5="f" * 32)
    root = tmp_path / "data"
    root.mkdir()
    (root / "ml-100k.zip").write_bytes(archive.read_bytes())
    with pytest.raises(DataNotFoundError, match="left it in place"):
        MovieLens100K(str(root)).prepare()
    assert (root / "ml-100k.zip").exists()
    assert not (root / "ml-100k").exists()


def test_archive_without_the_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = make_zip(tmp_path / "server" / "ml-100k.zip", {"other/u.data": U_DATA})
    serve(monkeypatch, MovieLens100K, archive, md5=md5(archive))
    with pytest.raises(DataNotFoundError, match="was extracted but does not contain them"):
        MovieLens100K(str(tmp_path / "data")).prepare()


def make_tar(path: Path, members: dict[str, str], link: tuple[str, str] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tf:
        for name, text in members.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        if link is not None:
            info = tarfile.TarInfo(link[0])
            info.type = tarfile.SYMTYPE
            info.linkname = link[1]
            tf.addfile(info)
    return path


PROFILE = "#id\tgender\tage\tcountry\tregistered\nuser_000001\tm\t\tJapan\tAug 13, 2006\n"
EVENTS = "user_000001\t2009-05-04T23:08:57Z\t\tBand\t\tSong\n"


def lastfm_tar(tmp_path: Path) -> Path:
    return make_tar(
        tmp_path / "server" / "lastfm-dataset-1K.tar.gz",
        {
            "lastfm-dataset-1K/userid-profile.tsv": PROFILE,
            "lastfm-dataset-1K/userid-timestamp-artid-artname-traid-traname.tsv": EVENTS,
        },
    )


def test_tar_member_checksums(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = lastfm_tar(tmp_path)
    digests = {
        "lastfm-dataset-1K/userid-profile.tsv": hashlib.md5(PROFILE.encode()).hexdigest(),
        "lastfm-dataset-1K/userid-timestamp-artid-artname-traid-traname.tsv": hashlib.md5(
            EVENTS.encode()
        ).hexdigest(),
    }
    serve(monkeypatch, LastFM1K, archive, member_md5=digests)
    src = LastFM1K(str(tmp_path / "ok"))
    src.prepare()
    assert src.load_users().index.tolist() == ["user_000001"]
    assert src.load_interactions()["item"].tolist() == ["Band"]

    bad = dict(digests, **{"lastfm-dataset-1K/userid-profile.tsv": "0" * 32})
    serve(monkeypatch, LastFM1K, archive, member_md5=bad)
    root = tmp_path / "bad"
    with pytest.raises(DataNotFoundError) as err:
        LastFM1K(str(root)).prepare(need_interactions=False)
    assert "checksum mismatch" in str(err.value) and "userid-profile.tsv" in str(err.value)
    assert list(root.iterdir()) == []  # corrupt download and extraction removed


def test_zip_path_traversal_is_refused(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "evil.zip", {"ok/a.txt": "a", "../escaped.txt": "x"})
    with pytest.raises(UnsafeArchiveError, match="outside"):
        extract_archive(archive, tmp_path / "out")
    assert not (tmp_path / "escaped.txt").exists()
    assert not (tmp_path / "out" / "ok" / "a.txt").exists()  # checked before writing anything
    archive = make_zip(tmp_path / "abs.zip", {"/etc/evil.txt": "x"})
    with pytest.raises(UnsafeArchiveError):
        extract_archive(archive, tmp_path / "out2")


def test_tar_links_and_traversal_are_refused(tmp_path: Path) -> None:
    archive = make_tar(tmp_path / "link.tar.gz", {"d/a.txt": "a"}, link=("d/link", "/etc/passwd"))
    with pytest.raises(UnsafeArchiveError, match="link"):
        extract_archive(archive, tmp_path / "out")
    archive = make_tar(tmp_path / "up.tar.gz", {"../../up.txt": "x"})
    with pytest.raises(UnsafeArchiveError):
        extract_archive(archive, tmp_path / "out")
    assert not (tmp_path / "up.txt").exists()


def test_unreadable_archive(tmp_path: Path) -> None:
    bad = tmp_path / "x.zip"
    bad.write_bytes(b"not a zip")
    with pytest.raises(DownloadError, match="unreadable archive"):
        extract_archive(bad, tmp_path / "out")
    with pytest.raises(DownloadError, match="unknown archive type"):
        extract_archive(tmp_path / "x.rar", tmp_path / "out")


class _FakeResponse(io.BytesIO):
    def __init__(self, body: bytes, length: int) -> None:
        super().__init__(body)
        self.headers = {"Content-Length": str(length)}


def test_fetch_truncated_download_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: _FakeResponse(b"abc", 10))
    dest = tmp_path / "f.part"
    with pytest.raises(DownloadError, match="cut short: got 3 of 10 bytes"):
        fetch("https://example.invalid/f.zip", dest)
    assert not dest.exists()


def test_fetch_timeout_and_scheme(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, float] = {}

    def slow(url: str, timeout: float) -> None:
        seen["timeout"] = timeout
        raise TimeoutError("timed out")

    monkeypatch.setattr(urllib.request, "urlopen", slow)
    with pytest.raises(DownloadError, match="timed out"):
        fetch("https://example.invalid/f.zip", tmp_path / "f")
    assert seen["timeout"] == 30.0
    with pytest.raises(DownloadError, match="scheme"):
        fetch("ftp://example.invalid/f.zip", tmp_path / "f")
    assert not (tmp_path / "f").exists()
