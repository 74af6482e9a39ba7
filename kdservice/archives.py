"""Uploaded data set archives: check every entry, then extract safely, then check the ImageFolder.

Archives are untrusted. Before anything is written, every entry is read from the archive's index
(zip) or headers (tar): absolute paths, '..', links, device files, names that are not UTF-8 or hold
control characters are refused (not skipped: an archive that tries them is not a data set); every
entry, hidden ones included, counts toward the entry limit; the declared sizes must stay under the
expansion limit and the compression-ratio limit (zip and gzip bombs). The bytes to extract are then
reserved in the process's disk budget, and extraction counts what it really writes, stopping at the
first byte over the limit. Every image must decode with PIL and stay under the pixel limit. Nothing
is unpickled. Problems raise ArchiveError, whose message names the entry, never a server path.
"""

from __future__ import annotations

import lzma
import shutil
import stat
import tarfile
import tempfile
import unicodedata
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from PIL import Image

from kdcore.image_files import IMAGE_EXTENSIONS
from kdservice.budget import Reservation
from kdservice.settings import Settings

CHUNK = 1 << 20
# An archive may declare at most this many times KD_UPLOAD_MAX_BYTES of content.
EXPANSION_FACTOR = 4
MAX_NAME_BYTES = 255  # one path component on Linux file systems
MAX_PATH_BYTES = 1024
ZIP_UTF8_FLAG = 0x800


class ArchiveError(Exception):
    """The archive is not an acceptable data set; the message says why (422, field `file`)."""


@dataclass(frozen=True)
class ArchiveLimits:
    max_files: int  # entries, hidden ones included
    max_bytes: int  # sum of the declared sizes of all entries
    max_ratio: float  # max_bytes relative to the archive's own size
    max_image_pixels: int

    @classmethod
    def from_settings(cls, settings: Settings) -> ArchiveLimits:
        return cls(max_files=settings.upload_max_files, max_bytes=EXPANSION_FACTOR * settings.upload_max_bytes,
                   max_ratio=settings.upload_max_ratio, max_image_pixels=settings.max_image_pixels)


def limit_pil_pixels(max_pixels: int) -> None:
    """PIL refuses (DecompressionBombError) images over twice this; check_image_folder refuses them
    over it with a clear message, so PIL's warning in between says nothing new. Set once at start,
    before PIL opens anything (it is process-wide)."""
    Image.MAX_IMAGE_PIXELS = max_pixels
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


# --- names

def _shown(name: str) -> str:
    """A name fit for a message: undecodable bytes and control characters escaped."""
    return ascii(name) if not name.isprintable() else repr(name)


def _zip_name(info: zipfile.ZipInfo) -> str:
    name = info.filename
    if info.flag_bits & ZIP_UTF8_FLAG or name.isascii():
        return name
    # Without the UTF-8 flag zipfile decodes names as cp437; many tools write UTF-8 anyway: accept that.
    try:
        return name.encode("cp437").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        raise ArchiveError(f"archive member {_shown(name)} has a name that is not UTF-8; re-create the "
                           "archive with UTF-8 names") from None


def _safe_name(name: str) -> PurePosixPath | None:
    """The member's relative path, or None for entries to leave out (macOS metadata, hidden files)."""
    try:
        encoded = name.encode("utf-8")  # tar names with undecodable bytes hold surrogates
    except UnicodeEncodeError:
        raise ArchiveError(f"archive member {_shown(name)} has a name that is not UTF-8") from None
    if any(unicodedata.category(c) == "Cc" for c in name):
        raise ArchiveError(f"archive member {_shown(name)} has control characters in its name")
    if "\\" in name or name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise ArchiveError(f"archive member {name!r} has an absolute path")
    path = PurePosixPath(name)
    if ".." in path.parts:
        raise ArchiveError(f"archive member {name!r} points outside the archive ('..')")
    if len(encoded) > MAX_PATH_BYTES or any(len(p.encode()) > MAX_NAME_BYTES for p in path.parts):
        raise ArchiveError(f"archive member {name[:80]!r}... has a name longer than {MAX_NAME_BYTES} bytes per "
                           f"folder or {MAX_PATH_BYTES} in all")
    parts = [p for p in path.parts if p not in ("", ".")]
    if not parts or parts[0] == "__MACOSX" or any(p.startswith(".") for p in parts):
        return None
    return PurePosixPath(*parts)


# --- entries

@dataclass
class _Entry:
    path: PurePosixPath | None  # None: left out (hidden, macOS metadata)
    is_dir: bool
    size: int  # declared
    open: Callable[[], IO[bytes] | None]

    @property
    def extracted(self) -> bool:
        return self.path is not None and (self.is_dir or self.path.suffix.lower() in IMAGE_EXTENSIONS)


def _zip_entries(archive: zipfile.ZipFile) -> Iterator[_Entry]:
    for info in archive.infolist():
        mode = info.external_attr >> 16
        name = _zip_name(info)
        if stat.S_ISLNK(mode):
            raise ArchiveError(f"archive member {name!r} is a symbolic link")
        # Many zip writers leave the file-type bits 0: only a stated type other than file/folder is refused.
        if stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            raise ArchiveError(f"archive member {name!r} is not a regular file or folder")
        yield _Entry(_safe_name(name), info.is_dir(), info.file_size, lambda i=info: archive.open(i))


def _tar_entries(archive: tarfile.TarFile) -> Iterator[_Entry]:
    for info in archive:  # headers one at a time: a bomb is refused before its data is decompressed
        if info.issym() or info.islnk():
            raise ArchiveError(f"archive member {info.name!r} is a link")
        if not (info.isfile() or info.isdir()):
            raise ArchiveError(f"archive member {info.name!r} is a device, fifo or other special file")
        yield _Entry(_safe_name(info.name), info.isdir(), info.size, lambda i=info: archive.extractfile(i))


def _plan(entries: Iterator[_Entry], archive_size: int, limits: ArchiveLimits) -> list[_Entry]:
    """Check every entry's name, type and declared size before anything is written; the entries to extract."""
    expand_limit = min(limits.max_bytes, int(limits.max_ratio * max(archive_size, 1)))
    kept, count, declared = [], 0, 0
    for entry in entries:
        count += 1
        if count > limits.max_files:
            raise ArchiveError(f"the archive holds more than {limits.max_files} entries, hidden ones included "
                               "(KD_UPLOAD_MAX_FILES)")
        declared += entry.size
        if declared > limits.max_bytes:
            raise ArchiveError(f"the archive declares more than {limits.max_bytes} bytes of content "
                               f"({EXPANSION_FACTOR} x KD_UPLOAD_MAX_BYTES)")
        if declared > expand_limit:
            raise ArchiveError(f"the archive expands more than {limits.max_ratio:g} times its size of "
                               f"{archive_size} bytes (KD_UPLOAD_MAX_RATIO): refused as a possible archive bomb")
        if entry.extracted:
            kept.append(entry)
    return kept


def _extract(entries: list[_Entry], dest: Path, max_bytes: int) -> None:
    written = 0
    for entry in entries:
        target = dest.joinpath(*entry.path.parts)  # type: ignore[union-attr]
        try:
            if entry.is_dir:
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            source = entry.open()
            if source is None:
                continue
            member_bytes = 0
            with source, target.open("wb") as out:
                while chunk := source.read(CHUNK):
                    # Count what is really written: stop at the first byte over either limit.
                    member_bytes += len(chunk)
                    written += len(chunk)
                    if member_bytes > entry.size:
                        raise ArchiveError(f"archive member {str(entry.path)!r} holds more bytes than it declares")
                    if written > max_bytes:
                        raise ArchiveError(f"the archive expands to more than {max_bytes} bytes")
                    out.write(chunk)
        except OSError as exc:  # a name clash (file and folder), a full disk: say which entry, not where
            raise ArchiveError(f"cannot extract archive member {str(entry.path)!r}: {exc.strerror or exc}") from exc


def extract_archive(archive_path: Path, dest: Path, limits: ArchiveLimits,
                    reservation: Reservation | None = None) -> None:
    """Extract a .zip or .tar(.gz) into dest (only folders and image files), refusing unsafe archives."""
    size = archive_path.stat().st_size
    with archive_path.open("rb") as f:
        magic = f.read(4)
    try:
        if magic.startswith((b"PK\x03\x04", b"PK\x05\x06")):
            opened: zipfile.ZipFile | tarfile.TarFile = zipfile.ZipFile(archive_path)
            entries: Callable[[], Iterator[_Entry]] = lambda: _zip_entries(opened)  # noqa: E731
        elif magic.startswith(b"\x1f\x8b") or tarfile.is_tarfile(archive_path):
            opened = tarfile.open(archive_path, "r:*")
            entries = lambda: _tar_entries(opened)  # noqa: E731
        else:
            raise ArchiveError("the upload is neither a .zip nor a .tar.gz archive")
        with opened:
            kept = _plan(entries(), size, limits)
            if reservation is not None:
                reservation.grow(sum(e.size for e in kept))
            _extract(kept, dest, limits.max_bytes)
    except UnicodeDecodeError:  # a zip whose UTF-8 flag is set on names that are not UTF-8
        raise ArchiveError("an archive member's name is not valid UTF-8 although the archive says it is") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, tarfile.TarError, EOFError, ValueError, zlib.error,
            lzma.LZMAError) as exc:
        raise ArchiveError(f"the archive is damaged: {exc}") from exc
    except OSError as exc:  # zlib/gzip errors while reading; never the file's own path
        raise ArchiveError(f"the archive is damaged: {exc.strerror or type(exc).__name__}") from exc


# --- the extracted ImageFolder

@dataclass
class FolderSummary:
    root: Path
    classes: list[str]
    num_images: int
    size_bytes: int


def _data_root(folder: Path) -> Path:
    # An archive of one folder (mydata/train/..., mydata/cat/...): the data set starts inside it.
    root = folder
    while True:
        entries = list(root.iterdir())
        if len(entries) == 1 and entries[0].is_dir() and entries[0].name not in ("train", "test"):
            inner = list(entries[0].iterdir())
            if inner and all(e.is_dir() for e in inner):
                root = entries[0]
                continue
        return root


def _class_images(folder: Path, where: str) -> dict[str, list[Path]]:
    stray = sorted(p.name for p in folder.iterdir() if p.is_file())
    if stray:
        raise ArchiveError(f"{where} holds image files outside class folders (e.g. {stray[0]!r}); put each "
                           "image in a folder named after its class")
    found = {}
    for entry in sorted(folder.iterdir()):
        if entry.is_dir() and entry.name not in ("train", "test"):
            found[entry.name] = sorted(p for p in entry.rglob("*") if p.is_file())
    return found


def _verify_image(path: Path, root: Path, max_pixels: int) -> None:
    name = str(path.relative_to(root))
    too_big = f"{name} has more than {max_pixels} pixels (KD_MAX_IMAGE_PIXELS)"
    try:
        with Image.open(path) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise ArchiveError(f"{name} is {width}x{height} pixels, more than {max_pixels} "
                                   "(KD_MAX_IMAGE_PIXELS)")
            image.verify()  # structure and checksums
        with Image.open(path) as image:
            image.load()  # a full decode: truncated files fail here
    except ArchiveError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ArchiveError(too_big) from exc
    except Exception as exc:  # PIL raises many types for bad files; its messages name the full path
        reason = str(exc).replace(str(path), name)
        raise ArchiveError(f"{name} is not a readable image: {reason}") from exc


def check_image_folder(folder: Path, max_image_pixels: int) -> FolderSummary:
    """Validate an extracted ImageFolder (train/+test/ or class folders, >= 2 classes, decodable images)."""
    root = _data_root(folder)
    if (root / "train").is_dir():
        if not (root / "test").is_dir():
            raise ArchiveError("the archive has train/ but no test/; give both, or only class folders")
        train = _class_images(root / "train", "train/")
        test = _class_images(root / "test", "test/")
        unknown = sorted(set(test) - set(train))
        if unknown:
            raise ArchiveError(f"test class folder {unknown[0]!r} has no train/ folder")
        if not any(test.values()):
            raise ArchiveError("test/ holds no images")
        splits = [train, test]
    elif (root / "test").is_dir():
        raise ArchiveError("the archive has test/ but no train/; give both, or only class folders")
    else:
        train = _class_images(root, "the archive's top folder")
        splits = [train]
    classes = list(train)
    if len(classes) < 2:
        raise ArchiveError(f"a data set needs at least 2 class folders; found {len(classes)} "
                           f"({', '.join(classes) or 'none'})")
    empty = [c for c, files in train.items() if not files]
    if empty:
        kinds = ", ".join(sorted(IMAGE_EXTENSIONS))
        raise ArchiveError(f"class folder {empty[0]!r} holds no images ({kinds})")
    images = [p for split in splits for files in split.values() for p in files]
    for path in images:
        _verify_image(path, root, max_image_pixels)
    return FolderSummary(root, classes, len(images), sum(p.stat().st_size for p in images))


def store_dataset(archive_path: Path, work_dir: Path, final_dir: Path, limits: ArchiveLimits,
                  reservation: Reservation | None = None) -> FolderSummary:
    """Extract and check an archive in work_dir, then move the data set root to final_dir."""
    extract_dir = Path(tempfile.mkdtemp(dir=work_dir, prefix="extract-"))
    try:
        extract_archive(archive_path, extract_dir, limits, reservation)
        summary = check_image_folder(extract_dir, limits.max_image_pixels)
        final_dir.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(summary.root), str(final_dir))
        summary.root = final_dir
        return summary
    finally:
        shutil.rmtree(extract_dir, ignore_errors=True)
