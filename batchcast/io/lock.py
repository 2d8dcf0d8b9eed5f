"""One job per output prefix: the lock object ``<output>/_batchcast_lock.json`` (issue 9.5).

Two jobs writing to one output would mix silently (each ``.out`` from either job, the
summary from one), so a job takes the output for its lifetime: it creates the lock object
holding who it is (:class:`Holder`), checks before each ``.out`` commit that the lock still
names it, and removes it at the end, whether the job succeeded or failed.

Creating the lock is atomic where the store allows it:

- local: the file is held with ``flock`` for the job's life. The kernel drops that lock
  when the process dies however it dies, so the lock file a killed driver leaves behind is
  taken over by the next job on its own (with a warning naming the dead run); a live job's
  cannot be. The inode is checked after locking, so a file removed by a finishing job
  between our open and our lock is not mistaken for the current one.
- S3: a conditional put (``If-None-Match: *``): of two jobs racing, S3 accepts one. The lock
  is read back after writing, which also catches a store that ignores the condition. S3 has
  no way to tell a dead driver's lock from a live one's: the user removes it, or reruns
  with ``force`` (``--force``), which overwrites it. A job whose lock was overwritten that
  way fails at its next commit instead of mixing its files with the new job's.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import logging
import os
import socket
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

import botocore.exceptions
import orjson

from batchcast.errors import ConfigError
from batchcast.io.sinks import OutputError, join_uri, read_bytes
from batchcast.io.sources import is_s3, local_path, s3_client, split_s3

__all__ = ["LOCK_NAME", "Holder", "OutputInUseError", "OutputLock"]

LOCK_NAME = "_batchcast_lock.json"

_log = logging.getLogger(__name__)
_S3_ERRORS = (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError)
_TAKEN = ("PreconditionFailed", "ConditionalRequestConflict", "412", "409")


class OutputInUseError(ConfigError):
    """Another job holds the output (or took it over from this one)."""


@dataclass(frozen=True)
class Holder:
    """Who holds an output: written into the lock object.

    Attributes:
        job: the job's name.
        run: this run's id (unique per run, also across reruns of a same-named job).
        host, pid: where the driver runs.
        started: UTC start time, ISO 8601.
        configuration: what the job's output bytes depend on (``--resume`` compares it).
    """

    job: str
    run: str = field(default_factory=lambda: uuid.uuid4().hex)
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    started: str = field(
        default_factory=lambda: datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"
        )
    )
    configuration: dict[str, Any] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        return orjson.dumps(asdict(self), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)

    @classmethod
    def from_bytes(cls, data: bytes) -> Holder | None:
        """The holder in a lock object, or None for an empty or foreign one."""
        try:
            value = orjson.loads(data)
            return cls(**value) if isinstance(value, dict) else None
        except (orjson.JSONDecodeError, TypeError):
            return None

    def describe(self) -> str:
        where = f"pid {self.pid} on {self.host}, since {self.started}"
        return f"job {self.job!r} (run {self.run[:8]}, {where})"


class OutputLock:
    """A held output; made by :meth:`acquire`, ended by :meth:`release`.

    Attributes:
        uri: the lock object.
        holder: this job.
        previous: the holder of a dead run's lock this one took over (local), or of a lock
            overwritten by ``force``; None when the output was free.
    """

    def __init__(self, uri: str, holder: Holder, previous: Holder | None, fd: int | None) -> None:
        self.uri, self.holder, self.previous = uri, holder, previous
        self._fd = fd  # the flock'd file, locally

    @classmethod
    def acquire(cls, output: str, holder: Holder, *, force: bool = False) -> OutputLock:
        """Take ``output`` for ``holder``.

        Raises:
            OutputInUseError: another job holds it (not raised with ``force``).
            OutputError: the lock cannot be written (a read-only folder, S3 unreachable).
        """
        uri = join_uri(output, LOCK_NAME)
        if is_s3(uri):
            return cls(uri, holder, _acquire_s3(uri, holder, force=force), None)
        fd, previous = _acquire_local(uri, holder, force=force)
        return cls(uri, holder, previous, fd)

    def check(self) -> None:
        """Raise unless the lock object still names this run (call before each commit).

        Raises:
            OutputInUseError: the lock was removed or taken by another job.
            OutputError: the lock cannot be read.
        """
        current = _read(self.uri)
        if current is None or current.run != self.holder.run:
            who = "removed" if current is None else f"taken over by {current.describe()}"
            raise OutputInUseError(
                f"the output lock {self.uri} was {who} while this job ran; this job stops "
                "here so that the two jobs' files do not mix"
            )

    def release(self) -> None:
        """Remove the lock if it still names this run. Never raises (it runs on the way out
        of a job that may be failing): a failure is logged."""
        try:
            current = _read(self.uri)
            if current is not None and current.run == self.holder.run:
                _delete(self.uri)
        except Exception as err:  # clean-up must not mask the job's own error
            _log.warning("could not remove the output lock %s: %s", self.uri, err)
        finally:
            if self._fd is not None:
                with contextlib.suppress(OSError):
                    os.close(self._fd)  # after the unlink: see _acquire_local
                self._fd = None


def _in_use(uri: str, holder: Holder | None) -> OutputInUseError:
    output = uri[: -len(LOCK_NAME) - 1]
    who = holder.describe() if holder is not None else "another job (just starting)"
    return OutputInUseError(
        f"output {output} is in use by {who}; wait for it to end, or if it is dead, "
        f"delete {uri} or rerun with --force"
    )


def _acquire_local(uri: str, holder: Holder, *, force: bool) -> tuple[int, Holder | None]:
    path = local_path(uri)
    data = holder.to_bytes()  # before the file exists: a holder that cannot be written leaves none
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        for _ in range(100):  # a retry only when a finishing job removed the file under us
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                if not force:
                    raise _in_use(uri, _read(uri)) from None
                return _overwrite_local(path, holder)
            if _same_file(fd, path):
                previous = Holder.from_bytes(_read_fd(fd))
                if previous is not None:
                    _log.warning("taking over the lock of a dead run: %s", previous.describe())
                _write_fd(fd, data)
                return fd, previous
            os.close(fd)
    except OSError as err:
        raise OutputError(uri, f"cannot take the output lock: {err}") from err
    raise OutputError(uri, "cannot take the output lock: it keeps being replaced")


def _overwrite_local(path: str, holder: Holder) -> tuple[int, Holder | None]:
    """``force``: replace a live job's lock with ours (a new file, locked before the rename)."""
    previous = _read(path)
    temp = f"{path}.{holder.run}.tmp"
    fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    _write_fd(fd, holder.to_bytes())
    os.replace(temp, path)
    _log.warning("--force: took the output from %s", previous.describe() if previous else "?")
    return fd, previous


def _same_file(fd: int, path: str) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (own.st_dev, own.st_ino) == (st.st_dev, st.st_ino)


def _read_fd(fd: int) -> bytes:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


def _write_fd(fd: int, data: bytes) -> None:
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, data)
    os.fsync(fd)


def _acquire_s3(uri: str, holder: Holder, *, force: bool) -> Holder | None:
    bucket, key = split_s3(uri)
    client, previous = s3_client(), None
    try:
        try:
            client.put_object(Bucket=bucket, Key=key, Body=holder.to_bytes(), IfNoneMatch="*")
        except botocore.exceptions.ClientError as err:
            if err.response.get("Error", {}).get("Code") not in _TAKEN:
                raise
            previous = _read(uri)
            if not force:
                raise _in_use(uri, previous) from None
            client.put_object(Bucket=bucket, Key=key, Body=holder.to_bytes())
            _log.warning(
                "--force: took the output from %s", previous.describe() if previous else "?"
            )
    except _S3_ERRORS as err:
        raise OutputError(uri, f"cannot take the output lock: {err}") from err
    current = _read(uri)  # a store that ignores If-None-Match: the last writer wins
    if current is None or current.run != holder.run:
        raise _in_use(uri, current)
    return previous


def _read(uri: str) -> Holder | None:
    """The lock's holder; None when there is no lock object, or it is empty (a job that is
    just starting) or not a lock.

    Raises:
        OutputError: when it cannot be read.
    """
    data = read_bytes(uri)
    return None if data is None else Holder.from_bytes(data)


def _delete(uri: str) -> None:
    if is_s3(uri):
        bucket, key = split_s3(uri)
        s3_client().delete_object(Bucket=bucket, Key=key)
    else:
        # Unlinked while still flock'd, closed after: a job waiting on our file finds it gone
        # (the inode check) and creates a fresh one.
        os.unlink(local_path(uri))
