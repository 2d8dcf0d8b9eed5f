"""Atomic per-file writers: a reader never sees a partial output object (SPEC.md §4).

Local: bytes go to a dot-prefixed temporary file in the target's folder (so a folder
listing skips it and the rename stays on one file system), then ``os.replace`` puts it in
place at once. S3: a multipart upload, completed only on commit and aborted otherwise
(smart_open's ``terminate()``), so no object and no pending upload are left behind.

A sink is a context manager: leaving the ``with`` normally commits, leaving it by an
exception aborts.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from types import TracebackType
from typing import Any, BinaryIO

import botocore.exceptions
import smart_open

from batchcast.io.sources import InputObject, is_s3, local_path, s3_client, split_s3

__all__ = ["Sink", "exists", "join_uri", "open_sink", "output_uri", "write_bytes_atomic"]

# S3 parts: few enough requests for big outputs, small enough to bound a writer's buffer.
# (S3 requires 5 MiB to 5 GiB per part but the last.)
_PART_SIZE = 16 << 20


class Sink:
    """One output object being written; see :func:`open_sink`."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self._done = False

    def write(self, data: bytes) -> None:
        """Append ``data``.

        Raises:
            ValueError: after commit or abort.
        """
        if self._done:
            raise ValueError(f"sink {self.uri!r} is already committed or aborted")
        self._write(data)

    def commit(self) -> None:
        """Make the object appear with everything written. Idempotent."""
        if not self._done:
            self._done = True
            self._commit()

    def abort(self) -> None:
        """Drop everything written; no object appears. A no-op after commit."""
        if not self._done:
            self._done = True
            self._abort()

    def __enter__(self) -> Sink:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()

    def _write(self, data: bytes) -> None:
        raise NotImplementedError

    def _commit(self) -> None:
        raise NotImplementedError

    def _abort(self) -> None:
        raise NotImplementedError


class _LocalSink(Sink):
    def __init__(self, uri: str) -> None:
        super().__init__(uri)
        self._path = os.path.abspath(local_path(uri))
        folder, name = os.path.split(self._path)
        os.makedirs(folder, exist_ok=True)
        # Not mkstemp: its files are 0600, while the output should get the umask's mode.
        self._temp = os.path.join(folder, f".{name}.{uuid.uuid4().hex}.tmp")
        self._file: BinaryIO = open(self._temp, "xb")  # noqa: SIM115  # closed by commit/abort

    def _write(self, data: bytes) -> None:
        self._file.write(data)

    def _commit(self) -> None:
        try:
            self._file.flush()
            # Durable before visible: after a crash the name holds all of it or nothing.
            os.fsync(self._file.fileno())
            self._file.close()
            os.replace(self._temp, self._path)
        except BaseException:
            self._abort()
            raise

    def _abort(self) -> None:
        self._file.close()
        with contextlib.suppress(FileNotFoundError):  # a commit that failed half-way
            os.unlink(self._temp)


class _S3Sink(Sink):
    def __init__(self, uri: str) -> None:
        super().__init__(uri)
        params = {"client": s3_client(), "min_part_size": _PART_SIZE}
        # compression="disable": the bytes are written as given whatever the name ends with.
        self._writer: Any = smart_open.open(
            uri, "wb", compression="disable", transport_params=params
        )

    def _write(self, data: bytes) -> None:
        self._writer.write(data)

    def _commit(self) -> None:
        try:
            self._writer.close()  # CompleteMultipartUpload (a plain empty PUT for 0 bytes)
        except BaseException:
            self._abort()
            raise

    def _abort(self) -> None:
        self._writer.terminate()  # AbortMultipartUpload: no object appears


def open_sink(uri: str) -> Sink:
    """Open an atomic writer for ``uri`` (a local path or ``s3://bucket/key``).

    Local parent folders are created. Use as ``with open_sink(uri) as sink: sink.write(...)``.

    Raises:
        OSError: when the local folder cannot be created or written.
        ValueError: when the S3 bucket does not exist or cannot be written (smart_open's).
    """
    return _S3Sink(uri) if is_s3(uri) else _LocalSink(uri)


def write_bytes_atomic(uri: str, data: bytes) -> None:
    """Write a whole small object at once, atomically (one PUT on S3)."""
    if is_s3(uri):
        bucket, key = split_s3(uri)
        s3_client().put_object(Bucket=bucket, Key=key, Body=data)
        return
    with open_sink(uri) as sink:
        sink.write(data)


def exists(uri: str) -> bool:
    """Whether an object exists at ``uri``."""
    if not is_s3(uri):
        return os.path.exists(local_path(uri))
    bucket, key = split_s3(uri)
    try:
        s3_client().head_object(Bucket=bucket, Key=key)
    except botocore.exceptions.ClientError as err:
        if err.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return False
        raise
    return True


def join_uri(prefix: str, name: str) -> str:
    """``prefix/name`` with exactly one slash between them (local or S3)."""
    return f"{prefix.rstrip('/')}/{name.lstrip('/')}"


def output_uri(output_prefix: str, obj: InputObject) -> str:
    """Where an input object's output goes: ``<output_prefix>/<relpath>.out``."""
    return join_uri(output_prefix, obj.relpath + ".out")
