"""The ``transform`` subcommand: its flags, and what it prints.

Registering it costs nothing at start-up: Ray, torch and boto3 are imported by the command
when it runs (through :func:`batchcast.api.transform`). ``cli.py`` registers it with
:func:`add_parser`; the parser sets ``func``, which takes the parsed arguments and returns
the exit status.

Output: a short human summary on stdout (``--json``: the machine-readable one instead), then
up to ``MAX_ERRORS_SHOWN`` record errors on stderr, one ``RecordError: uri:line: ...`` line
each. Exit status 0 when the job completed, 1 when it failed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import orjson

from batchcast.errors import ConfigError, one_line

__all__ = ["FLAGS", "MAX_ERRORS_SHOWN", "add_parser", "read_json"]

MAX_ERRORS_SHOWN = 20  # record errors printed on stderr; the summary file lists them

# TransformJob field -> the flag that sets it: a range error names what the user typed.
FLAGS = {
    "workers": "--workers",
    "gpus_per_worker": "--gpus-per-worker",
    "max_payload_mb": "--max-payload-mb",
    "shard_mb": "--shard-mb",
    "max_errors_listed": "--max-errors-listed",
    "shard_timeout_s": "--shard-timeout",
    "max_held_mb": "--max-held-mb",
}


def read_json(path: str) -> Any:
    """The JSON value in the file ``path`` (``-``: stdin).

    Raises:
        ConfigError: when the file cannot be read or is not JSON.
    """
    try:
        data = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as err:
        raise ConfigError(f"cannot read {path}: {err.strerror}") from err
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as err:
        raise ConfigError(f"{path} is not valid JSON: {err}") from err


def _fields(value: str) -> list[str]:
    return [f.strip() for f in value.split(",") if f.strip()]


def _options(args: argparse.Namespace) -> dict[str, Any]:
    """The TransformJob fields the flags set (flags not given are left out)."""
    options: dict[str, Any] = {
        "workers": args.workers,
        "gpus_per_worker": args.gpus_per_worker,
        "on_error": args.on_error,
        "seed": args.seed,
        "batch_strategy": args.batch_strategy,
        "assemble_with": args.assemble_with,
        "max_payload_mb": args.max_payload_mb,
        "resume": args.resume or None,
        "force": args.force or None,
        "shard_mb": args.shard_mb,
        "pipeline": args.pipeline,
        "executor": args.executor,
        "data_type": args.data_type,
        "compression": args.compression,
        "name": args.job_name,
        "inference": args.inference_config,
        "accept": args.accept,
        "precision": args.precision,
        "response_keys": _response_keys(args),
        "max_errors_listed": args.max_errors_listed,
        "errors_file": args.errors_file or None,
        "shard_timeout_s": args.shard_timeout,
        "max_held_mb": args.max_held_mb,
    }
    return {k: v for k, v in options.items() if v is not None}


def _response_keys(args: argparse.Namespace) -> Any:
    """The SAGEMAKER_INFERENCE_* flags as ResponseKeys, or None when none is given."""
    given = {"output": args.output_keys, "supported": args.supported_keys, "input": args.input_keys}
    if all(v is None for v in given.values()):
        return None
    from batchcast.io.content import ResponseKeys

    return ResponseKeys(**given)


def run_transform_command(args: argparse.Namespace) -> int:
    """Run ``batchcast transform``; the exit status."""
    from batchcast.api import transform

    job = read_json(args.job) if args.job else None
    options = _options(args)
    try:
        summary = transform(
            args.model,
            args.input,
            args.output,
            job=job,
            progress=args.progress,
            forward_fields=args.forward_fields,
            **options,
        )
    except ConfigError as err:
        flag = FLAGS.get(err.key or "")
        if flag and err.key in options and err.expectation:
            raise ConfigError(f"{flag} {err.expectation}", key=err.key) from err
        raise
    if args.json:
        sys.stdout.buffer.write(orjson.dumps(summary.brief(), option=orjson.OPT_INDENT_2) + b"\n")
    else:
        print(summary.render())
    sys.stdout.flush()
    for failed in summary.file_errors[:MAX_ERRORS_SHOWN]:  # each already "Type: message"
        print(one_line(failed["message"]), file=sys.stderr)
    errors = summary.record_errors()
    for error in errors[:MAX_ERRORS_SHOWN]:
        print(f"RecordError: {error}", file=sys.stderr)
    if summary.counts["record_errors"] > MAX_ERRORS_SHOWN:
        more = summary.counts["record_errors"] - MAX_ERRORS_SHOWN
        see = summary.errors_uri or summary.summary_uri
        print(f"... and {more} more; see {see}", file=sys.stderr)
    if args.report:
        from batchcast.report import report_for_job

        report_for_job(summary.to_dict(), summary.job["input"], summary.job["output"], args.report)
        print(f"report: {args.report}", file=sys.stderr)
    return 0 if summary.ok else 1


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``transform`` to ``subparsers`` (an ``add_subparsers()`` result)."""
    t = subparsers.add_parser(
        "transform", help="forecast every record of the input files (batch transform)"
    )
    t.add_argument("--model", required=True, help="model folder or model.tar.gz (local or s3://)")
    t.add_argument("--input", help="file, folder, glob, s3://bucket/prefix, or a manifest")
    t.add_argument("--output", help="output folder or s3://bucket/prefix")
    t.add_argument("--job", help="a CreateTransformJob request body (JSON); flags override it")
    t.add_argument("--job-name", help="the job's name (TransformJobName); default generated")
    t.add_argument(
        "--inference-config",
        help="DEEPAR_INFERENCE_CONFIG as JSON; overrides the job file and the environment",
    )
    t.add_argument(
        "--compression",
        choices=["None", "Gzip"],
        help="CompressionType: Gzip reads every object as gzip (default None: only .gz names)",
    )
    t.add_argument(
        "--workers", type=int, help="model workers (default MODEL_SERVER_WORKERS or one per CPU)"
    )
    t.add_argument("--gpus-per-worker", type=float, help="GPUs per worker (default 0: CPU)")
    t.add_argument(
        "--on-error",
        choices=["fail-file", "record", "fail-fast"],
        help="what a bad record does: fail its file (default, SageMaker's rule), become an "
        "error line in the output (record), or stop the job (fail-fast)",
    )
    t.add_argument(
        "--seed",
        type=int,
        help="job seed (default 0): each shard's draws derive from it, the file and the shard",
    )
    t.add_argument(
        "--forward-fields",
        type=_fields,
        help="comma-separated input fields copied to every output line, e.g. item_id",
    )
    t.add_argument(
        "--batch-strategy",
        choices=["SingleRecord", "MultiRecord"],
        help="BatchStrategy; accepted for compatibility: records are always forecast in batches",
    )
    t.add_argument(
        "--assemble-with",
        choices=["Line", "None"],
        help="AssembleWith: Line ends each output record with a newline (default); None "
        "concatenates them",
    )
    t.add_argument(
        "--max-payload-mb",
        type=float,
        help="largest record in MB (MaxPayloadInMB, 1-100, default 6)",
    )
    t.add_argument(
        "--data-type",
        choices=["S3Prefix", "ManifestFile"],
        help="S3DataType: --input is a prefix/folder/file/glob (S3Prefix, default) or a manifest",
    )
    t.add_argument(
        "--resume",
        action="store_true",
        help="skip inputs whose .out already exists (only for the same job configuration)",
    )
    t.add_argument(
        "--force",
        action="store_true",
        help="take the output even if its lock (_batchcast_lock.json) names another job: for "
        "the lock of a driver that was killed (on S3; locally a dead job's lock is taken over "
        "anyway)",
    )
    t.add_argument(
        "--shard-mb",
        type=float,
        help="target shard size in MB (default 4); part of the output's identity",
    )
    t.add_argument(
        "--shard-timeout",
        type=float,
        metavar="SECONDS",
        help="a shard still running after this long fails the job, naming its URI (default: "
        "the S3 timeouts' bound plus 30 min per 4 MB of shard)",
    )
    t.add_argument(
        "--max-held-mb",
        type=float,
        help="output in MB the driver holds at once, in flight and waiting to be written in "
        "order (default 256; one shard always passes)",
    )
    t.add_argument(
        "--pipeline",
        choices=["auto", "fused", "split"],
        help="fused: a worker reads, decodes, samples and encodes; split: decode and encode in "
        "CPU tasks beside the sampling actor (the GPU path); auto (default): split with GPUs",
    )
    t.add_argument(
        "--executor",
        choices=["auto", "local", "ray"],
        help="where the workers run: local (threads of this process, no Ray start-up), ray, or "
        "auto (default): local for a CPU job of at most 64 MB when no Ray cluster is running or "
        "named in RAY_ADDRESS; never changes the output",
    )
    t.add_argument(
        "--accept",
        help="output content type (TransformOutput.Accept): application/jsonlines (default), "
        "application/json (the same lines) or text/csv",
    )
    t.add_argument(
        "--output-keys",
        metavar="KEYS",
        help="SAGEMAKER_INFERENCE_OUTPUT: the keys of each output record, in order, e.g. "
        "'predicted_label,probability' (replaces output_types; classification keys need "
        "classes in the inference configuration)",
    )
    t.add_argument(
        "--supported-keys",
        metavar="KEYS",
        help="SAGEMAKER_INFERENCE_SUPPORTED: the keys this deployment allows",
    )
    t.add_argument(
        "--input-keys",
        metavar="KEYS",
        help="SAGEMAKER_INFERENCE_INPUT: the keys a previous pipeline stage sends (checked, "
        "reported)",
    )
    t.add_argument(
        "--precision",
        choices=["fp32", "bf16"],
        help="sampler GEMM precision (default fp32); bf16 needs a CPU with bf16 units (AMX, "
        "AVX512-BF16) and otherwise runs fp32, saying so",
    )
    t.add_argument(
        "--max-errors-listed",
        type=int,
        help="record errors listed in the summary (default 1000, the first ones); all are "
        "counted, by field and by file",
    )
    t.add_argument(
        "--errors-file",
        action="store_true",
        help="also write every record error as JSON Lines to <output>/_batchcast_errors.jsonl",
    )
    t.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress line on stderr (default: when stderr is a terminal)",
    )
    t.add_argument(
        "--json",
        action="store_true",
        help="print the machine-readable result (JSON) instead of the human summary",
    )
    t.add_argument(
        "--report",
        metavar="HTML",
        help="also write a self-contained HTML page: the job summary, every record error, "
        "and fan charts of a few series",
    )
    t.set_defaults(func=run_transform_command)
    return t
