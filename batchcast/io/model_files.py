"""A model's files as ``{name: bytes}``: read from and written to a folder or a ``model.tar.gz``,
local or on S3.

What the bytes mean is :mod:`batchcast.forecast.artifacts`' concern (and the GluonTS
importer's); this module only moves them, through the same S3 client (timeouts, bounded
retries) and atomic writers as every other object (:mod:`batchcast.io.sinks`).

An archive is read whole into memory and never extracted to disk. Its members must be plain
files at the archive's root, written ``name`` or ``./name`` (``tar -C model -czf m.tar.gz .``
adds the ``./`` and a ``.`` entry), or all of them in one folder at the root
(``tar -czf m.tar.gz model/``) with that folder's own entry (issue 9.7). Anything else is
refused with a :class:`~batchcast.errors.ModelError` naming the member: an absolute path, a
``..`` component, a deeper folder or a second one, a link, a device or FIFO, and a name that
appears twice (tar would let the last one win, unseen). Other plain files beside the model's
are allowed and ignored.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Collection, Mapping

import botocore.exceptions

from batchcast.errors import ModelError
from batchcast.io.sinks import join_uri, write_bytes_atomic
from batchcast.io.sources import is_s3, local_path, s3_client, split_s3

__all__ = ["ARCHIVE_SUFFIXES", "is_archive", "read_model_files", "write_model_files"]

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz")
# What a model.tar.gz's members may unpack to, together (checked on their declared sizes
# before any is unpacked): gzip packs zeros 1,000 to 1, so a small archive could otherwise
# ask for tens of GB. A DeepAR's weights are a few MB.
MAX_ARCHIVE_BYTES = 1 << 30
_MISSING_CODES = ("404", "NoSuchKey", "NotFound")


def is_archive(uri: str) -> bool:
    """Whether ``uri`` names a gzipped tar archive (``.tar.gz`` or ``.tgz``) or a folder."""
    return uri.endswith(ARCHIVE_SUFFIXES)


def read_model_files(uri: str, names: Collection[str]) -> dict[str, bytes]:
    """Read the files ``names`` of the model at ``uri``.

    Args:
        uri: a folder (``uri/name`` for each name) or a ``.tar.gz``/``.tgz`` archive, local or
            ``s3://``.
        names: the files wanted; those that are absent are left out of the result (the caller
            knows which it needs and says so).

    Returns:
        ``{name: bytes}`` of the wanted files that exist.

    Raises:
        ModelError: when the archive is missing or cannot be read, holds an unsafe or
            duplicate member, or a folder's file cannot be read for another reason than its
            absence (access denied, a timeout: the message names the file and the cause).
    """
    if is_archive(uri):
        try:
            raw = _read(uri)
        except FileNotFoundError as err:
            raise ModelError(f"no model at {uri}: {err}") from err
        if raw is None:
            raise ModelError(f"no model at {uri}: the object does not exist")
        return _untar(raw, uri, names)
    files = {}
    for name in names:
        file_uri = join_uri(uri, name)
        try:
            data = _read(file_uri)
        except FileNotFoundError:
            continue
        if data is not None:
            files[name] = data
    return files


def _read(uri: str) -> bytes | None:
    """The bytes of one object; None for a missing S3 key.

    Raises:
        FileNotFoundError: for a missing local file.
        ModelError: for any other failure.
    """
    try:
        if not is_s3(uri):
            with open(local_path(uri), "rb") as f:
                return f.read()
        bucket, key = split_s3(uri)
        try:
            body = s3_client().get_object(Bucket=bucket, Key=key)["Body"]
        except botocore.exceptions.ClientError as err:
            if err.response.get("Error", {}).get("Code") in _MISSING_CODES:
                return None
            raise
        with body:
            return bytes(body.read())
    except FileNotFoundError:
        raise
    except (OSError, botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as err:
        raise ModelError(f"cannot read {uri}: {err}") from err


def _member_path(member: tarfile.TarInfo, uri: str) -> tuple[str, ...]:
    """A member's path as parts without ``.`` (``()`` for the root entry itself).

    Raises:
        ModelError: for a link, a device or FIFO, an absolute path, a ``..`` or a path deeper
            than one folder.
    """
    name = member.name
    parts = tuple(part for part in name.split("/") if part not in ("", "."))
    if member.isdir():
        why = "is a folder inside a folder" if len(parts) > 1 else ""
    elif not member.isfile():
        why = "is a link" if member.issym() or member.islnk() else "is a device or FIFO"
    elif not parts:
        why = "has no name"
    else:
        why = "is in a folder inside a folder" if len(parts) > 2 else ""
    if name.startswith("/"):
        why = "has an absolute path"
    elif ".." in parts:
        why = "leaves the archive ('..')"
    if why:
        raise ModelError(f"{uri}: archive member {name!r} {why}; {_LAYOUT}")
    return parts


_LAYOUT = "a model.tar.gz holds plain files at its root or in one folder there"


def _untar(raw: bytes, uri: str, names: Collection[str]) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:gz") as tar:
            folders: set[tuple[str, ...]] = set()  # where files are: () or one folder
            seen: set[str] = set()
            declared = 0
            for member in tar:  # lazily: a member's size is checked before it is unpacked
                declared += member.size
                if declared > MAX_ARCHIVE_BYTES:
                    raise ModelError(
                        f"{uri}: the archive's members unpack to more than "
                        f"{MAX_ARCHIVE_BYTES} bytes (at {member.name!r}); a model is far smaller"
                    )
                parts = _member_path(member, uri)
                if member.isdir():
                    continue  # the root's or a folder's own entry; checked when files come
                folders.add(parts[:-1])
                if len(folders) > 1:
                    raise ModelError(
                        f"{uri}: archive member {member.name!r} is not where the other files "
                        f"are; {_LAYOUT}"
                    )
                name = parts[-1]
                if name in seen:
                    raise ModelError(f"{uri}: archive member {name!r} appears more than once")
                seen.add(name)
                if name in names:
                    extracted = tar.extractfile(member)
                    assert extracted is not None  # isfile() members always extract
                    files[name] = extracted.read()
            # tar stops at its end marker; gzip checks its CRC only at the stream's end, so
            # without reading to it a flipped byte inside the weights loads silently.
            stream = tar.fileobj
            assert stream is not None  # opened from a file object
            while stream.read(1 << 20):
                pass
    except (tarfile.TarError, EOFError, OSError) as err:  # OSError: gzip's BadGzipFile
        raise ModelError(f"{uri} is not a readable .tar.gz: {err}") from err
    return files


def write_model_files(uri: str, files: Mapping[str, bytes]) -> str:
    """Write a model's files to a folder, or to one archive when ``uri`` ends with ``.tar.gz``
    (or ``.tgz``), local or on S3. Each object appears atomically.

    Args:
        uri: the folder or archive.
        files: ``{name: bytes}``; names are plain file names.

    Returns:
        ``uri``.

    Raises:
        OutputError: when an object cannot be written.
    """
    if is_archive(uri):
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            for name, data in files.items():
                info = tarfile.TarInfo(name)  # mtime 0, root-owned: the same bytes every time
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        write_bytes_atomic(uri, buffer.getvalue())
        return uri
    for name, data in files.items():
        write_bytes_atomic(join_uri(uri, name), data)
    return uri
