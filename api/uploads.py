"""Uploaded files: stream to disk under a size limit, extract archives safely, check ImageFolders.

Archives are untrusted: members with absolute paths, '..', links or device files are refused (not
skipped: an archive that tries them is not a data set), the extracted size is capped (zip bombs),
and every image must decode with PIL. Nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import shutil
import stat
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from fastapi import HTTPException, UploadFile
from PIL import Image

from api.problems import ProblemError

CHUNK = 1 << 20
# The same extensions kdcore.data.folders reads; other files in an archive are left out.
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}


class UploadTooLarge(ProblemError):
    def __init__(self, limit: int):
        super().__init__(413, f"upload larger than the limit of {limit} bytes (KD_UPLOAD_MAX_BYTES)",
                         field="file", kind="payload-too-large")

    def as_http(self) -> HTTPException:
        # Raised from the body receiver, only an HTTPException passes FastAPI's form parsing unchanged.
        exc = HTTPException(413, self.detail)
        exc.errors = self.errors  # type: ignore[attr-defined]
        return exc


def save_upload(upload: UploadFile, folder: Path, limit: int) -> tuple[Path, int, str]:
    """Copy an upload to a new file in folder in chunks; (path, size, sha256). 413 over limit."""
    folder.mkdir(parents=True, exist_ok=True)
    digest, size = hashlib.sha256(), 0
    handle = tempfile.NamedTemporaryFile(dir=folder, prefix="upload-", delete=False)
    path = Path(handle.name)
    try:
        with handle:
            while chunk := upload.file.read(CHUNK):
                size += len(chunk)
                if size > limit:
                    raise UploadTooLarge(limit)
                digest.update(chunk)
                handle.write(chunk)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path, size, digest.hexdigest()


def _bad_archive(message: str) -> ProblemError:
    return ProblemError(422, message, field="file", kind="bad-archive")


def _safe_name(name: str) -> PurePosixPath | None:
    """The member's relative path, or None for entries to leave out (macOS metadata, hidden files)."""
    if "\\" in name or name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise _bad_archive(f"archive member {name!r} has an absolute path")
    path = PurePosixPath(name)
    if ".." in path.parts:
        raise _bad_archive(f"archive member {name!r} points outside the archive ('..')")
    parts = [p for p in path.parts if p not in ("", ".")]
    if not parts or parts[0] == "__MACOSX" or any(p.startswith(".") for p in parts):
        return None
    return PurePosixPath(*parts)


@dataclass
class _Member:
    path: PurePosixPath
    is_dir: bool
    size: int
    open: object  # () -> binary file object


def _zip_members(archive: zipfile.ZipFile) -> Iterator[_Member]:
    for info in archive.infolist():
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise _bad_archive(f"archive member {info.filename!r} is a symbolic link")
        # Many zip writers leave the file-type bits 0: only a stated type other than file/folder is refused.
        if stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            raise _bad_archive(f"archive member {info.filename!r} is not a regular file or folder")
        path = _safe_name(info.filename)
        if path is not None:
            yield _Member(path, info.is_dir(), info.file_size, lambda i=info: archive.open(i))


def _tar_members(archive: tarfile.TarFile) -> Iterator[_Member]:
    for info in archive:
        if info.issym() or info.islnk():
            raise _bad_archive(f"archive member {info.name!r} is a link")
        if not (info.isfile() or info.isdir()):
            raise _bad_archive(f"archive member {info.name!r} is a device, fifo or other special file")
        path = _safe_name(info.name)
        if path is not None:
            yield _Member(path, info.isdir(), info.size, lambda i=info: archive.extractfile(i))


def extract_archive(archive_path: Path, dest: Path, *, max_files: int, max_bytes: int) -> None:
    """Extract a .zip or .tar(.gz) into dest (only folders and image files), refusing unsafe members."""
    with archive_path.open("rb") as f:
        magic = f.read(4)
    try:
        if magic.startswith(b"PK\x03\x04") or magic.startswith(b"PK\x05\x06"):
            with zipfile.ZipFile(archive_path) as archive:
                _extract(_zip_members(archive), dest, max_files, max_bytes)
        elif magic.startswith(b"\x1f\x8b") or tarfile.is_tarfile(archive_path):
            with tarfile.open(archive_path, "r:*") as archive:
                _extract(_tar_members(archive), dest, max_files, max_bytes)
        else:
            raise _bad_archive("the upload is neither a .zip nor a .tar.gz archive")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as exc:
        raise _bad_archive(f"the archive is damaged: {exc}") from exc


def _extract(members: Iterator[_Member], dest: Path, max_files: int, max_bytes: int) -> None:
    count, written = 0, 0
    for member in members:
        count += 1
        if count > max_files:
            raise _bad_archive(f"the archive holds more than {max_files} entries (KD_UPLOAD_MAX_FILES)")
        target = dest.joinpath(*member.path.parts)
        if member.is_dir:
            target.mkdir(parents=True, exist_ok=True)
            continue
        if member.path.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        source = member.open()  # type: ignore[operator]
        with source, target.open("wb") as out:
            # Count what is really written: sizes in archive headers can lie.
            while chunk := source.read(CHUNK):
                written += len(chunk)
                if written > max_bytes:
                    raise _bad_archive(f"the archive expands to more than {max_bytes} bytes")
                out.write(chunk)


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
        raise _bad_archive(f"{where} holds image files outside class folders (e.g. {stray[0]!r}); put each "
                           "image in a folder named after its class")
    found = {}
    for entry in sorted(folder.iterdir()):
        if entry.is_dir() and entry.name not in ("train", "test"):
            found[entry.name] = sorted(p for p in entry.rglob("*") if p.is_file())
    return found


def _verify_image(path: Path, root: Path) -> None:
    try:
        with Image.open(path) as image:
            image.verify()  # structure and checksums
        with Image.open(path) as image:
            image.load()  # a full decode: truncated files fail here
    except Exception as exc:  # PIL raises many types for bad files
        raise _bad_archive(f"{path.relative_to(root)} is not a readable image: {exc}") from exc


def check_image_folder(folder: Path) -> FolderSummary:
    """Validate an extracted ImageFolder (train/+test/ or class folders, >= 2 classes, decodable images)."""
    root = _data_root(folder)
    if (root / "train").is_dir():
        if not (root / "test").is_dir():
            raise _bad_archive("the archive has train/ but no test/; give both, or only class folders")
        train = _class_images(root / "train", "train/")
        test = _class_images(root / "test", "test/")
        unknown = sorted(set(test) - set(train))
        if unknown:
            raise _bad_archive(f"test class folder {unknown[0]!r} has no train/ folder")
        if not any(test.values()):
            raise _bad_archive("test/ holds no images")
        splits = [train, test]
    elif (root / "test").is_dir():
        raise _bad_archive("the archive has test/ but no train/; give both, or only class folders")
    else:
        train = _class_images(root, "the archive's top folder")
        splits = [train]
    classes = list(train)
    if len(classes) < 2:
        raise _bad_archive(f"a data set needs at least 2 class folders; found {len(classes)} "
                           f"({', '.join(classes) or 'none'})")
    empty = [c for c, files in train.items() if not files]
    if empty:
        kinds = ", ".join(sorted(IMAGE_EXTENSIONS))
        raise _bad_archive(f"class folder {empty[0]!r} holds no images ({kinds})")
    images = [p for split in splits for files in split.values() for p in files]
    for path in images:
        _verify_image(path, root)
    return FolderSummary(root, classes, len(images), sum(p.stat().st_size for p in images))


def store_dataset(archive_path: Path, work_dir: Path, final_dir: Path, *, max_files: int,
                  max_bytes: int) -> FolderSummary:
    """Extract and check an archive in work_dir, then move the data set root to final_dir."""
    extract_dir = Path(tempfile.mkdtemp(dir=work_dir, prefix="extract-"))
    try:
        extract_archive(archive_path, extract_dir, max_files=max_files, max_bytes=max_bytes)
        summary = check_image_folder(extract_dir)
        final_dir.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(summary.root), str(final_dir))
        summary.root = final_dir
        return summary
    finally:
        shutil.rmtree(extract_dir, ignore_errors=True)

