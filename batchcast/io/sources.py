"""Where input comes from: listing input objects and opening byte ranges of them.

An input is a local file, a local folder (recursive), a glob, an ``s3://bucket/prefix``
(SageMaker's ``S3Prefix``: a raw key-prefix match) or a SageMaker ``ManifestFile``. Each
listed object becomes an :class:`InputObject`; its ``relpath`` names its output
(``<output>/<relpath>.out``).

S3 goes through boto3 and smart_open with the standard AWS configuration (environment,
shared config, instance role), so ``AWS_ENDPOINT_URL_S3`` points everything at any
S3-compatible endpoint; no endpoint is hard-coded here.

No S3 call waits forever: every request made through :func:`s3_client` (listing, HEAD, the
ranged GETs of :func:`open_range`, the uploads of ``io.sinks``) has a connect timeout, a read
timeout and a bounded number of attempts (:func:`s3_config`). Worst cases with the defaults
(connect 5 s, read 20 s, 3 attempts, botocore's "standard" backoff of at most 1 s then 2 s):

- one request to a dead or frozen endpoint fails after at most 3 x (5 + 20) + 3 = 78 s;
- a GET whose body stalls mid-stream: 20 s for the stalled read, 1 s of smart_open's pause,
  then one fresh ranged GET (at most 78 s): about 100 s before the error;
- an endpoint that keeps answering some requests and stalling others is bounded by
  smart_open's five body re-reads per read call: at most 5 x (20 + 78) + 31 s, about 9 min.

``BATCHCAST_S3_CONNECT_TIMEOUT``, ``BATCHCAST_S3_READ_TIMEOUT`` (seconds) and
``BATCHCAST_S3_MAX_ATTEMPTS`` change them; the bounds scale accordingly.
"""

from __future__ import annotations

import gzip
import os
import re
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO, cast

import botocore.exceptions
import orjson

from batchcast.errors import ConfigError, ShardError

if TYPE_CHECKING:
    import botocore.config

__all__ = [
    "READ_ERRORS",
    "InputObject",
    "is_s3",
    "list_inputs",
    "local_path",
    "open_range",
    "s3_client",
    "s3_config",
    "s3_request_bound_s",
    "split_s3",
]

# What a failed read can raise: local and smart_open I/O errors (smart_open wraps botocore's
# ClientError in OSError), botocore's own, and a corrupt or truncated gzip stream.
READ_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    EOFError,
    zlib.error,
    botocore.exceptions.BotoCoreError,
    botocore.exceptions.ClientError,
)

# smart_open's read buffer: each refill is one read from the open GET stream, so a larger
# buffer means fewer Python-level calls, not more requests.
_S3_READ_BUFFER = 4 << 20

_GLOB_MAGIC = re.compile(r"[*?[]")
_DATA_TYPES = ("S3Prefix", "ManifestFile")


@dataclass(frozen=True)
class InputObject:
    """One input object (a file or an S3 key) to transform on its own.

    Attributes:
        uri: where to read it: an absolute local path or ``s3://bucket/key``.
        size: its size in bytes (compressed size for ``.gz``).
        relpath: its path relative to the input prefix or folder; the output is
            ``<output>/<relpath>.out``.
        compressed: True for gzip input (the name ends with ``.gz``).
    """

    uri: str
    size: int
    relpath: str
    compressed: bool


# ---------------------------------------------------------------------------------------------
# URIs and the S3 client


def is_s3(uri: str) -> bool:
    """True for an ``s3://`` URI."""
    return uri.startswith("s3://")


def split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> ``(bucket, key)`` (the key may be empty).

    Raises:
        ConfigError: when the URI has no bucket.
    """
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not is_s3(uri) or not bucket:
        raise ConfigError(f"expected an S3 URI 's3://bucket/key', got {uri!r}")
    return bucket, key


def local_path(uri: str) -> str:
    """A local path from a path or a ``file://`` URI."""
    return uri[len("file://") :] if uri.startswith("file://") else uri


# Defaults of s3_config (see the module docstring for the worst cases they give).
S3_CONNECT_TIMEOUT_S = 5.0
S3_READ_TIMEOUT_S = 20.0
S3_MAX_ATTEMPTS = 3


def _env_number(name: str, default: float, *, integer: bool = False) -> float:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        value = 0
    if not value > 0:
        raise ConfigError(
            f"{name} must be a positive {'integer' if integer else 'number'}, got {text!r}"
        )
    return value


def s3_config() -> botocore.config.Config:
    """The botocore configuration of every S3 client batchcast makes.

    Connect and read timeouts and a bounded retry policy ("standard" mode: throttling and
    transient errors are retried with jittered exponential backoff), read from
    ``BATCHCAST_S3_CONNECT_TIMEOUT``, ``BATCHCAST_S3_READ_TIMEOUT`` and
    ``BATCHCAST_S3_MAX_ATTEMPTS`` when set.

    Raises:
        ConfigError: when one of those variables is not a positive number.
    """
    import botocore.config  # here, not at the top: ~0.1 s a local job need not pay

    return botocore.config.Config(
        connect_timeout=_env_number("BATCHCAST_S3_CONNECT_TIMEOUT", S3_CONNECT_TIMEOUT_S),
        read_timeout=_env_number("BATCHCAST_S3_READ_TIMEOUT", S3_READ_TIMEOUT_S),
        # max_attempts counts the first try too (botocore's standard mode).
        retries={
            "max_attempts": int(
                _env_number("BATCHCAST_S3_MAX_ATTEMPTS", S3_MAX_ATTEMPTS, integer=True)
            ),
            "mode": "standard",
        },
        # One connection per concurrent reader or writer thread in a worker.
        max_pool_connections=64,
    )


def s3_request_bound_s() -> float:
    """Seconds one S3 request can take at most under :func:`s3_config`: every attempt's
    connect and read timeouts plus the standard mode's backoff between them (at most 1 s,
    2 s, 4 s, ..., capped at 20 s). 78 s with the defaults.

    Raises:
        ConfigError: when one of the ``BATCHCAST_S3_*`` variables is not a positive number.
    """
    connect = _env_number("BATCHCAST_S3_CONNECT_TIMEOUT", S3_CONNECT_TIMEOUT_S)
    read = _env_number("BATCHCAST_S3_READ_TIMEOUT", S3_READ_TIMEOUT_S)
    attempts = int(_env_number("BATCHCAST_S3_MAX_ATTEMPTS", S3_MAX_ATTEMPTS, integer=True))
    backoff = sum(min(2.0**i, 20.0) for i in range(attempts - 1))
    return attempts * (connect + read) + backoff


_client_lock = threading.Lock()
_clients: dict[tuple[Any, ...], Any] = {}
_CLIENT_ENV = (
    "AWS_ENDPOINT_URL_S3",
    "AWS_ENDPOINT_URL",
    "BATCHCAST_S3_CONNECT_TIMEOUT",
    "BATCHCAST_S3_READ_TIMEOUT",
    "BATCHCAST_S3_MAX_ATTEMPTS",
)


def s3_client() -> Any:
    """The process's boto3 S3 client (configured by :func:`s3_config`), created on first use.

    Clients are thread-safe but creating one from the default session is not, hence the
    lock. The cache is keyed by process id (a forked child must not reuse its parent's
    connection pool) and by the endpoint and timeout variables, so changing them (as tests
    do) takes effect without a restart.

    Raises:
        ConfigError: for an invalid timeout or attempt variable.
    """
    key = (os.getpid(), *(os.environ.get(name) for name in _CLIENT_ENV))
    client = _clients.get(key)
    if client is None:
        with _client_lock:
            client = _clients.get(key)
            if client is None:
                import boto3  # with smart_open ~0.25 s of imports: only S3 jobs pay them
                import smart_open.s3

                client = boto3.session.Session().client("s3", config=s3_config())
                # smart_open retries its multipart calls on EndpointConnectionError itself,
                # 6 times 10 s apart, on top of the client's own attempts (its documented
                # knob): one attempt keeps the worst case the client's.
                smart_open.s3.RETRY.attempts = 1
                _clients[key] = client
    return client


# ---------------------------------------------------------------------------------------------
# Listing


def list_inputs(
    input: str, *, data_type: str = "S3Prefix", exclude: str | None = None
) -> list[InputObject]:
    """List the objects an input names, in a stable order.

    Args:
        input: a local file, a local folder (recursive; dot-files, dot-folders and
            ``_SUCCESS`` are skipped), a glob (``*.jsonl``, ``**``), an ``s3://bucket/prefix``
            (every key that starts with the prefix, as SageMaker's ``S3Prefix`` does: the
            prefix need not be a folder; keys ending in ``/`` are skipped), or with
            ``data_type="ManifestFile"`` a manifest ``[{"prefix": "s3://b/p/"}, "rel/key", ...]``
            (local or on S3).
        data_type: ``"S3Prefix"`` (the default; also used for local inputs) or ``"ManifestFile"``.
        exclude: a folder or S3 prefix whose objects are never input, typically the job's own
            output location when it lies inside the input (``out/`` under ``data/``), so a
            second run does not read the first one's ``.out`` files back. It is matched as a
            folder: ``s3://b/out`` excludes ``s3://b/out/x`` but not ``s3://b/outline.jsonl``.

    Returns:
        The input objects, sorted by relpath (manifest: in the manifest's order).

    Raises:
        ConfigError: for an unknown data type, a missing local path, a malformed manifest,
            an S3 listing error, or an input that names no object.
    """
    if data_type not in _DATA_TYPES:
        raise ConfigError(f"S3DataType must be one of {list(_DATA_TYPES)}, got {data_type!r}")
    if data_type == "ManifestFile":
        objects = _list_manifest(input)
    elif is_s3(input):
        objects = _list_s3_prefix(input)
    else:
        objects = _list_local(local_path(input))
    if exclude is not None:
        objects = [o for o in objects if not _inside(o.uri, exclude)]
    if not objects:
        where = "" if exclude is None else f" outside {exclude!r}"
        raise ConfigError(f"input {input!r} names no object to transform{where}")
    return objects


def _inside(uri: str, folder: str) -> bool:
    """Whether ``uri`` lies in ``folder`` (an S3 prefix or a local folder, as a folder)."""
    if is_s3(folder):
        return uri.startswith(folder.rstrip("/") + "/")
    if is_s3(uri):
        return False
    base = os.path.abspath(local_path(folder))
    return uri == base or uri.startswith(base.rstrip(os.sep) + os.sep)


def _skipped(name: str) -> bool:
    # Hidden files and Spark/Hadoop's success marker are never input.
    return name.startswith(".") or name == "_SUCCESS"


def _local_object(path: str, relpath: str) -> InputObject:
    return InputObject(
        uri=os.path.abspath(path),
        size=os.path.getsize(path),
        relpath=relpath,
        compressed=path.endswith(".gz"),
    )


def _walk_files(folder: str) -> Iterator[str]:
    for root, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if not _skipped(name):
                yield os.path.join(root, name)


def _list_local(path: str) -> list[InputObject]:
    if _GLOB_MAGIC.search(path):
        return _list_glob(path)
    if os.path.isdir(path):
        objects = [_local_object(p, os.path.relpath(p, path)) for p in _walk_files(path)]
        return sorted(objects, key=lambda o: o.relpath)
    if os.path.isfile(path):
        return [_local_object(path, os.path.basename(path))]
    raise ConfigError(f"input {path!r} does not exist")


def _list_glob(pattern: str) -> list[InputObject]:
    import glob  # only here: most inputs are not globs

    # relpaths are taken from the folder before the first component with a wildcard, so
    # "data/*/x.jsonl" gives "a/x.jsonl", "b/x.jsonl".
    parts = pattern.split(os.sep)
    fixed = next(i for i, part in enumerate(parts) if _GLOB_MAGIC.search(part))
    base = os.sep.join(parts[:fixed]) or (os.sep if pattern.startswith(os.sep) else ".")
    objects = []
    # include_hidden=False (the default) keeps '*' and '**' off dot-files and dot-folders.
    for path in glob.glob(pattern, recursive=True):
        if os.path.isfile(path) and not _skipped(os.path.basename(path)):
            objects.append(_local_object(path, os.path.relpath(path, base)))
    return sorted(objects, key=lambda o: o.relpath)


def _list_s3_prefix(uri: str) -> list[InputObject]:
    bucket, prefix = split_s3(uri)
    # Like SageMaker: relpath is the key after the prefix's last '/', so s3://b/data/part
    # maps data/part-1.jsonl -> part-1.jsonl and data/partition/x.jsonl -> partition/x.jsonl.
    base = prefix[: prefix.rfind("/") + 1]
    objects = []
    try:
        pages = s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for page in pages:
            for item in page.get("Contents", ()):
                key = item["Key"]
                if key.endswith("/"):  # a "folder" placeholder, not data
                    continue
                objects.append(
                    InputObject(
                        uri=f"s3://{bucket}/{key}",
                        size=int(item["Size"]),
                        relpath=key[len(base) :],
                        compressed=key.endswith(".gz"),
                    )
                )
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as err:
        raise ConfigError(f"cannot list input {uri!r}: {err}") from err
    return sorted(objects, key=lambda o: o.uri)


def _list_manifest(uri: str) -> list[InputObject]:
    prefix, keys = _read_manifest(uri)
    objects = []
    for key in keys:
        # SageMaker concatenates prefix and key as they are.
        object_uri = prefix + key
        objects.append(
            InputObject(
                uri=object_uri if is_s3(object_uri) else os.path.abspath(local_path(object_uri)),
                size=_object_size(object_uri, manifest=uri),
                relpath=key,
                compressed=key.endswith(".gz"),
            )
        )
    return objects


def _read_manifest(uri: str) -> tuple[str, list[str]]:
    try:
        with open_range(uri, compressed=False) as stream:
            manifest = orjson.loads(stream.read())
    except (ShardError, orjson.JSONDecodeError) as err:
        raise ConfigError(f"cannot read manifest {uri!r}: {err}") from err
    expected = 'a JSON array [{"prefix": "s3://bucket/prefix/"}, "relative/key", ...]'
    if (
        not isinstance(manifest, list)
        or not manifest
        or not isinstance(manifest[0], dict)
        or not isinstance(manifest[0].get("prefix"), str)
    ):
        raise ConfigError(f"manifest {uri!r} must be {expected}")
    bad = [key for key in manifest[1:] if not isinstance(key, str) or not key]
    if bad:
        raise ConfigError(f"manifest {uri!r}: keys must be non-empty strings, got {bad[0]!r}")
    return manifest[0]["prefix"], manifest[1:]


def _object_size(uri: str, *, manifest: str) -> int:
    try:
        if is_s3(uri):
            bucket, key = split_s3(uri)
            return int(s3_client().head_object(Bucket=bucket, Key=key)["ContentLength"])
        return os.path.getsize(local_path(uri))
    except READ_ERRORS as err:
        raise ConfigError(
            f"manifest {manifest!r} names {uri!r}, which cannot be read: {err}"
        ) from err


# ---------------------------------------------------------------------------------------------
# Reading


def open_range(uri: str, start: int = 0, *, compressed: bool | None = None) -> BinaryIO:
    """Open an object for reading from byte ``start`` to its end.

    On S3 this is one ranged GET (``Range: bytes=start-``) streamed as it is read: the
    object is never read whole and no request is made per read. A gzip object is opened
    as its decompressed stream.

    Args:
        uri: a local path, ``file://`` URI or ``s3://bucket/key``.
        start: the byte offset to start at (must be 0 for a compressed object).
        compressed: gzip or not; None infers it from a ``.gz`` name.

    Returns:
        A binary stream; close it (use ``with``).

    Raises:
        ShardError: when the object cannot be opened.
        ValueError: for ``start`` < 0, or > 0 on a compressed object (a gzip stream
            cannot be entered in the middle).
    """
    if compressed is None:
        compressed = uri.endswith(".gz")
    if start < 0 or (compressed and start):
        raise ValueError(f"cannot open {uri!r} at byte {start} (compressed={compressed})")
    try:
        if is_s3(uri):
            return _open_s3(uri, start, compressed=compressed)
        path = local_path(uri)
        if compressed:
            return cast(BinaryIO, gzip.open(path, "rb"))
        stream = open(path, "rb")  # noqa: SIM115  # returned to the caller, who closes it
        stream.seek(start)
        return stream
    except READ_ERRORS as err:
        raise ShardError(f"cannot open {uri!r}: {err}") from err


def _open_s3(uri: str, start: int, *, compressed: bool) -> BinaryIO:
    params = {
        "client": s3_client(),
        # No GET when opening: the first read (or the seek below) makes the only one.
        "defer_seek": True,
        "buffer_size": _S3_READ_BUFFER,
    }
    import smart_open

    stream = smart_open.open(
        uri, "rb", compression=".gz" if compressed else "disable", transport_params=params
    )
    if start:
        stream.seek(start)  # opens the body with Range: bytes=start-
    return cast(BinaryIO, stream)
