"""Download, verify and extract a dataset's official archive (standard library only).

:func:`download_archive` is what :meth:`DataSource.prepare
<lit_unlearn.datamodules.sources.base.DataSource.prepare>` calls when files are missing:

1. Use ``root/<archive name>`` if it is already there (placed by hand), otherwise stream the URL
   into ``root/<archive name>.part`` with :func:`fetch` (``urllib``, 30 s socket timeout).
2. Verify the archive's published checksum (md5 or sha256). A mismatching *download* is
   deleted; a mismatching archive placed by hand is left alone and reported.
3. Extract into a temporary folder under ``root``, refusing any member that would land outside
   it (absolute paths, ``..``, links, devices), verify the checksums of named members, and only
   then move the files into ``root``. A failed or corrupt extraction leaves nothing behind that a
   later run could mistake for a complete dataset.

Every failure raises :class:`DownloadError` (a :class:`ChecksumError` for a checksum mismatch);
sources turn it into a ``DataNotFoundError`` that says which files to put where.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import shutil
import stat
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

logger = logging.getLogger(__name__)

#: Socket timeout (seconds) of one download; no byte for this long aborts it.
DEFAULT_TIMEOUT: float = 30.0

_CHUNK = 1 << 20
_ALLOWED_SCHEMES = ("http", "https", "file")


class DownloadError(OSError):
    """An archive could not be downloaded, verified or extracted."""


class ChecksumError(DownloadError):
    """A file's digest differs from the published one."""


class UnsafeArchiveError(DownloadError):
    """An archive member would be written outside the target folder, or is a link or device."""


@dataclass(frozen=True)
class ArchiveSpec:
    """One official archive and how to check it.

    Attributes:
        url: Where the archive is published.
        filename: Name it gets in ``root`` (and under which a hand-placed copy is looked for).
        md5: Published md5 of the archive, if any.
        sha256: Published sha256 of the archive, if any.
        member_md5: ``path inside the archive -> md5`` of extracted files, for archives whose
            own digest is not published but whose README lists its files' digests.
    """

    url: str
    filename: str
    md5: str | None = None
    sha256: str | None = None
    member_md5: Mapping[str, str] = field(default_factory=dict)

    @property
    def verifiable(self) -> bool:
        """Whether any published digest can check this archive."""
        return bool(self.md5 or self.sha256 or self.member_md5)


def fetch(url: str, dest: Path, timeout: float = DEFAULT_TIMEOUT) -> None:
    """Stream ``url`` into ``dest``; on any failure remove the partial file.

    Tests replace this function (or serve a local ``file://`` URL) so they never use the network.

    Args:
        url: ``http``, ``https`` or ``file`` URL.
        dest: Output file; its folder is created.
        timeout: Socket timeout in seconds.

    Raises:
        DownloadError: Unsupported scheme, no network, HTTP error, timeout or truncated body.
    """
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in _ALLOWED_SCHEMES:
        raise DownloadError(
            f"refusing to download {url!r}: scheme must be one of {_ALLOWED_SCHEMES}"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    logger.info("downloading %s to %s", url, dest)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, dest.open("wb") as out:
            expected = response.headers.get("Content-Length")
            written = 0
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                written += len(chunk)
        if expected is not None and expected.isdigit() and int(expected) != written:
            raise DownloadError(
                f"download of {url} was cut short: got {written} of {int(expected)} bytes"
            )
    except DownloadError:
        dest.unlink(missing_ok=True)
        raise
    except (OSError, ValueError, http.client.HTTPException) as err:
        # URLError, HTTPError, socket timeouts and connection resets are all OSErrors.
        dest.unlink(missing_ok=True)
        raise DownloadError(f"could not download {url}: {err}") from err


def file_digest(path: Path, algorithm: str = "md5") -> str:
    """Hex digest of a file, read in 1 MiB chunks."""
    h = hashlib.new(algorithm)
    with Path(path).open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def verify_checksum(
    path: Path, expected: str, algorithm: str = "md5", remove_on_mismatch: bool = True
) -> None:
    """Compare a file's digest with the published one.

    Args:
        path: File to check.
        expected: Published hex digest (case-insensitive).
        algorithm: ``md5`` or ``sha256`` (any :mod:`hashlib` name).
        remove_on_mismatch: Delete the file when it does not match.

    Raises:
        ChecksumError: The digests differ; the message gives both and says if the file was
            removed.
    """
    actual = file_digest(path, algorithm)
    if actual.lower() == expected.lower():
        return
    if remove_on_mismatch:
        Path(path).unlink(missing_ok=True)
        what = "removed it"
    else:
        what = "left it in place; delete or replace it"
    raise ChecksumError(
        f"checksum mismatch for {path}: expected {algorithm} {expected.lower()}, got {actual} "
        f"(corrupt or changed file; {what})"
    )


def _archive_kind(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".zip"):
        return "zip"
    if name.endswith((".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar")):
        return "tar"
    raise DownloadError(f"{path}: unknown archive type (expected .zip, .tar, .tar.gz, .tgz)")


def _safe_relpath(name: str, archive: Path) -> PurePosixPath:
    """Check an archive member name and return it as a relative path inside the target."""
    posix = name.replace("\\", "/")
    rel = PurePosixPath(posix)
    if (
        not posix
        or posix.startswith("/")
        or (len(posix) > 1 and posix[1] == ":")
        or any(part == ".." for part in rel.parts)
    ):
        raise UnsafeArchiveError(
            f"{archive}: member {name!r} would be extracted outside the target"
        )
    return rel


def _within(target: Path, base: Path) -> bool:
    try:
        target.resolve().relative_to(base.resolve())
    except ValueError:
        return False
    return True


def extract_archive(archive: Path, dest: Path) -> list[Path]:
    """Extract a zip or tar archive into ``dest`` without letting any member escape it.

    Members with absolute paths or ``..`` components, symbolic or hard links and device files
    are refused before anything is written (the official dataset archives hold only plain files
    and folders).

    Args:
        archive: ``.zip``, ``.tar``, ``.tar.gz``/``.tgz``, ``.tar.bz2`` or ``.tar.xz`` file.
        dest: Target folder (created).

    Returns:
        The extracted regular files.

    Raises:
        UnsafeArchiveError: A member is unsafe; nothing was extracted.
        DownloadError: The archive is unreadable or of an unknown type.
    """
    archive, dest = Path(archive), Path(dest)
    kind = _archive_kind(archive)
    dest.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    try:
        if kind == "zip":
            with zipfile.ZipFile(archive) as zf:
                infos = zf.infolist()
                for info in infos:
                    rel = _safe_relpath(info.filename, archive)
                    mode = info.external_attr >> 16
                    if stat.S_ISLNK(mode):
                        raise UnsafeArchiveError(f"{archive}: member {info.filename!r} is a link")
                    if not _within(dest / rel, dest):
                        raise UnsafeArchiveError(
                            f"{archive}: member {info.filename!r} would be extracted outside {dest}"
                        )
                for info in infos:
                    out = Path(zf.extract(info, dest))
                    if not info.is_dir():
                        files.append(out)
        else:
            with tarfile.open(archive, "r:*") as tf:
                members = tf.getmembers()
                for m in members:
                    rel = _safe_relpath(m.name, archive)
                    if not (m.isfile() or m.isdir()):
                        raise UnsafeArchiveError(
                            f"{archive}: member {m.name!r} is a link or special file"
                        )
                    if not _within(dest / rel, dest):
                        raise UnsafeArchiveError(
                            f"{archive}: member {m.name!r} would be extracted outside {dest}"
                        )
                if hasattr(tarfile, "data_filter"):
                    tf.extractall(dest, members=members, filter="data")
                else:  # pragma: no cover - Python without extraction filters
                    tf.extractall(dest, members=members)
                files = [dest / _safe_relpath(m.name, archive) for m in members if m.isfile()]
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as err:
        raise DownloadError(f"{archive}: unreadable archive ({err})") from err
    return files


def _verify_archive(spec: ArchiveSpec, path: Path, remove: bool) -> None:
    if spec.sha256:
        verify_checksum(path, spec.sha256, "sha256", remove_on_mismatch=remove)
    elif spec.md5:
        verify_checksum(path, spec.md5, "md5", remove_on_mismatch=remove)


def download_archive(
    spec: ArchiveSpec,
    root: str | Path,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    keep_archive: bool = False,
) -> None:
    """Get, verify and extract an official archive into ``root``.

    Args:
        spec: The archive and its published digests.
        root: Folder the archive's top-level folder is extracted into.
        timeout: Socket timeout of the download.
        keep_archive: Keep a downloaded archive after a successful extraction (an archive that
            was already in ``root`` is always kept).

    Raises:
        DownloadError: Download failed (no network, HTTP error, timeout), the archive is
            unreadable or unsafe, or a file lacks from it.
        ChecksumError: A digest differs; the corrupt download (or extracted member) is removed.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    archive = root / spec.filename
    downloaded = False
    if archive.exists():
        logger.info("using %s already present", archive)
        _verify_archive(spec, archive, remove=False)
    else:
        part = archive.with_name(archive.name + ".part")
        fetch(spec.url, part, timeout)
        _verify_archive(spec, part, remove=True)
        os.replace(part, archive)
        downloaded = True
    if not spec.verifiable:
        # No published digest: the caller's presence check of the expected files is all there is.
        logger.warning("%s has no published checksum; checked by its files' presence only", archive)
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=root))
    try:
        try:
            extract_archive(archive, tmp)
            for rel, md5 in spec.member_md5.items():
                member = tmp / rel
                if not member.is_file():
                    raise DownloadError(f"{archive}: lacks the expected file {rel}")
                verify_checksum(member, md5, "md5", remove_on_mismatch=True)
        except DownloadError:
            if downloaded:
                archive.unlink(missing_ok=True)
            raise
        for path in sorted(tmp.rglob("*")):
            if path.is_file():
                target = root / path.relative_to(tmp)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if downloaded and not keep_archive:
        archive.unlink(missing_ok=True)
