"""Atomic per-file writers: a reader never sees a partial output object (SPEC.md §4).

Local: bytes go to a hidden temporary file in the target's folder (so a folder listing skips
it and the rename stays on one file system), then ``os.replace`` puts it in place at once.
S3: a multipart upload, completed only on commit and aborted otherwise (smart_open's
``terminate()``), so no object and no pending upload are left behind.

A sink is a context manager: leaving the ``with`` normally commits, leaving it by an
exception aborts.

Failures (issue 9): every error writing, committing or opening an output (a full disk, a
read-only folder, a lost S3 endpoint) is one :class:`OutputError` naming the URI and the
cause. Aborting never raises: it runs while another error is on its way out, and a failed
clean-up (a folder that turned read-only, an endpoint that is gone) is logged instead, so
the cause stays the error the user sees.

A writer killed before it could abort leaves its temporary file, named
``.<name>.<32 hex digits>.batchcast-tmp``, or on S3 a pending multipart upload;
:func:`remove_stale_temp` removes both under an output prefix (the runner calls it on
``--resume``, when the previous run of the job is known to be dead).
"""

from __future__ import annotations

import logging
import os
import re
import uuid
from types import TracebackType
from typing import Any, BinaryIO

import botocore.exceptions

from batchcast.errors import BatchcastError, one_line
from batchcast.io.sources import InputObject, is_s3, local_path, s3_client, split_s3

__all__ = [
    "TEMP_SUFFIX",
    "OutputError",
    "Sink",
    "exists",
    "join_uri",
    "open_sink",
    "output_uri",
    "read_bytes",
    "remove_stale_temp",
    "write_bytes_atomic",
]

_log = logging.getLogger(__name__)

# S3 parts: few enough requests for big outputs, small enough to bound a writer's buffer.
# (S3 requires 5 MiB to 5 GiB per part but the last.)
_PART_SIZE = 16 << 20

TEMP_SUFFIX = ".batchcast-tmp"
# Only names this module makes are ever removed as stale.
_TEMP_RE = re.compile(r"^\..+\.[0-9a-f]{32}" + re.escape(TEMP_SUFFIX) + "$")

# What an S3 call can fail with: botocore's errors, and smart_open's OSError and ValueError
# wrapping them (a missing bucket is a ValueError when the writer opens).
_S3_ERRORS = (
    botocore.exceptions.BotoCoreError,
    botocore.exceptions.ClientError,
    OSError,
    ValueError,
)


class OutputError(BatchcastError):
    """An output object could not be written, committed or opened.

    Args:
        uri: the output object (or prefix).
        cause: what failed, with the underlying error's message.
    """

    def __init__(self, uri: str, cause: str) -> None:
        self.uri = uri
        self.cause = cause
        super().__init__(f"cannot write {uri!r}: {cause}")

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep the fields when the error crosses a process boundary (Ray pickles it).
        return (OutputError, (self.uri, self.cause))


def _cause(err: BaseException) -> str:
    """``err`` in one line: its type and message (OSError's strerror and path included)."""
    text = one_line(err)
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


class Sink:
    """One output object being written; see :func:`open_sink`."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self._done = False

    def write(self, data: bytes) -> None:
        """Append ``data``.

        Raises:
            OutputError: when the bytes cannot be written (e.g. the disk is full); the sink
                must then be aborted (leaving a ``with`` block does it).
            ValueError: after commit or abort.
        """
        if self._done:
            raise ValueError(f"sink {self.uri!r} is already committed or aborted")
        try:
            self._write(data)
        except OutputError:
            raise
        except _S3_ERRORS as err:
            raise OutputError(self.uri, _cause(err)) from err

    def commit(self) -> None:
        """Make the object appear with everything written. Idempotent.

        Raises:
            OutputError: when the object cannot be completed; nothing appears and the sink
                is aborted.
        """
        if self._done:
            return
        self._done = True
        try:
            self._commit()
        except _S3_ERRORS as err:
            self._abort_logged()
            raise OutputError(self.uri, _cause(err)) from err

    def abort(self) -> None:
        """Drop everything written; no object appears. A no-op after commit.

        Never raises: a clean-up that fails (a folder that turned read-only, a lost
        endpoint) is logged as a warning, so the error that led here stays the one reported.
        """
        if not self._done:
            self._done = True
            self._abort_logged()

    def _abort_logged(self) -> None:
        try:
            self._abort()
        except Exception as err:  # clean-up must not mask the cause
            _log.warning("could not clean up the partial output %r: %s", self.uri, _cause(err))

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
        # Not mkstemp: its files are 0600, while the output should get the umask's mode.
        self._temp = os.path.join(folder, f".{name}.{uuid.uuid4().hex}{TEMP_SUFFIX}")
        try:
            os.makedirs(folder, exist_ok=True)
            self._file: BinaryIO = open(self._temp, "xb")  # noqa: SIM115  # closed by commit/abort
        except OSError as err:
            raise OutputError(uri, _cause(err)) from err

    def _write(self, data: bytes) -> None:
        self._file.write(data)

    def _commit(self) -> None:
        self._file.flush()
        # Durable before visible: after a crash the name holds all of it or nothing.
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self._temp, self._path)

    def _abort(self) -> None:
        try:
            self._file.close()  # may flush buffered bytes into a full disk: still unlink
        finally:
            if os.path.lexists(self._temp):  # gone after a commit that failed past the rename
                os.unlink(self._temp)


class _S3Sink(Sink):
    def __init__(self, uri: str) -> None:
        super().__init__(uri)
        params = {"client": s3_client(), "min_part_size": _PART_SIZE}
        try:
            # compression="disable": the bytes are written as given whatever the name ends with.
            import smart_open  # not at the top: a local job need not import it (~0.2 s)

            self._writer: Any = smart_open.open(
                uri, "wb", compression="disable", transport_params=params
            )
        except _S3_ERRORS as err:
            raise OutputError(uri, _cause(err)) from err

    def _write(self, data: bytes) -> None:
        self._writer.write(data)

    def _commit(self) -> None:
        self._writer.close()  # CompleteMultipartUpload (a plain empty PUT for 0 bytes)

    def _abort(self) -> None:
        self._writer.terminate()  # AbortMultipartUpload: no object appears


def open_sink(uri: str) -> Sink:
    """Open an atomic writer for ``uri`` (a local path or ``s3://bucket/key``).

    Local parent folders are created. Use as ``with open_sink(uri) as sink: sink.write(...)``.

    Raises:
        OutputError: when the local folder cannot be created or written, or the S3 upload
            cannot be started (a missing bucket, no access, the endpoint unreachable).
    """
    return _S3Sink(uri) if is_s3(uri) else _LocalSink(uri)


def write_bytes_atomic(uri: str, data: bytes) -> None:
    """Write a whole small object at once, atomically (one PUT on S3).

    Raises:
        OutputError: as :func:`open_sink` and :meth:`Sink.commit`.
    """
    if is_s3(uri):
        bucket, key = split_s3(uri)
        try:
            s3_client().put_object(Bucket=bucket, Key=key, Body=data)
        except _S3_ERRORS as err:
            raise OutputError(uri, _cause(err)) from err
        return
    with open_sink(uri) as sink:
        sink.write(data)


def exists(uri: str) -> bool:
    """Whether an object exists at ``uri``.

    Raises:
        OutputError: when S3 cannot say (no access, the endpoint unreachable).
    """
    if not is_s3(uri):
        return os.path.exists(local_path(uri))
    bucket, key = split_s3(uri)
    try:
        s3_client().head_object(Bucket=bucket, Key=key)
    except botocore.exceptions.ClientError as err:
        if err.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return False
        raise OutputError(uri, f"cannot tell whether it exists: {_cause(err)}") from err
    except botocore.exceptions.BotoCoreError as err:
        raise OutputError(uri, f"cannot tell whether it exists: {_cause(err)}") from err
    return True


def read_bytes(uri: str) -> bytes | None:
    """A small object's bytes (a summary, a lock); None when it does not exist.

    Raises:
        OutputError: when it exists but cannot be read, or S3 cannot say.
    """
    try:
        if not is_s3(uri):
            with open(local_path(uri), "rb") as f:
                return f.read()
        bucket, key = split_s3(uri)
        body: bytes = s3_client().get_object(Bucket=bucket, Key=key)["Body"].read()
        return body
    except FileNotFoundError:
        return None
    except botocore.exceptions.ClientError as err:
        if err.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return None
        raise OutputError(uri, f"cannot read it: {_cause(err)}") from err
    except _S3_ERRORS as err:
        raise OutputError(uri, f"cannot read it: {_cause(err)}") from err


def remove_stale_temp(output_prefix: str) -> list[str]:
    """Remove what killed writers left under ``output_prefix``.

    Locally: the temporary files this module names (``.<name>.<hex>.batchcast-tmp``), in the
    folder and below it; nothing else is touched. On S3: every pending multipart upload whose
    key starts with ``<prefix>/`` is aborted. Call it only when no other writer is at work
    under the prefix (e.g. on ``--resume``): a live writer's upload or file would go too.

    Args:
        output_prefix: a local folder or ``s3://bucket/prefix``.

    Returns:
        What was removed: local paths, or ``s3://bucket/key`` of each aborted upload.

    Raises:
        OutputError: when the listing or a removal fails.
    """
    if is_s3(output_prefix):
        return _abort_pending_uploads(output_prefix)
    folder = os.path.abspath(local_path(output_prefix))
    removed = []
    try:
        for root, _, files in os.walk(folder):
            for name in files:
                if _TEMP_RE.match(name):
                    path = os.path.join(root, name)
                    os.unlink(path)
                    removed.append(path)
    except OSError as err:
        raise OutputError(
            output_prefix, f"cannot remove stale temporary files: {_cause(err)}"
        ) from err
    return sorted(removed)


def _abort_pending_uploads(output_prefix: str) -> list[str]:
    bucket, key = split_s3(output_prefix)
    prefix = key.rstrip("/") + "/" if key else ""
    client = s3_client()
    removed = []
    try:
        pages = client.get_paginator("list_multipart_uploads").paginate(
            Bucket=bucket, Prefix=prefix
        )
        for page in pages:
            for upload in page.get("Uploads", ()):
                client.abort_multipart_upload(
                    Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                )
                removed.append(f"s3://{bucket}/{upload['Key']}")
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as err:
        raise OutputError(output_prefix, f"cannot abort pending uploads: {_cause(err)}") from err
    return sorted(removed)


def join_uri(prefix: str, name: str) -> str:
    """``prefix/name`` with exactly one slash between them (local or S3)."""
    return f"{prefix.rstrip('/')}/{name.lstrip('/')}"


def output_uri(output_prefix: str, obj: InputObject) -> str:
    """Where an input object's output goes: ``<output_prefix>/<relpath>.out``."""
    return join_uri(output_prefix, obj.relpath + ".out")
