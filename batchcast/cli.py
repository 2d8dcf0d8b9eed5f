"""The ``batchcast`` command line: argument parsing only.

A :class:`BatchcastError` becomes ``Type: message`` on stderr and exit status 1; a job that
ends failed (a file with record errors) exits 1 after printing its summary.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from batchcast.errors import BatchcastError, ConfigError
from batchcast.report.command import add_parsers as add_report_parsers

__all__ = ["main"]

MAX_ERRORS_SHOWN = 20  # record errors printed on stderr; the summary file lists them all


def _read_json(path: str) -> Any:
    try:
        data = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as err:
        raise ConfigError(f"cannot read {path}: {err.strerror}") from err
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as err:
        raise ConfigError(f"{path} is not valid JSON: {err}") from err


def _print_json(value: Any) -> None:
    sys.stdout.buffer.write(orjson.dumps(value, option=orjson.OPT_INDENT_2) + b"\n")
    sys.stdout.flush()


# ---------------------------------------------------------------------------------------------
# Commands


def _cmd_train(args: argparse.Namespace) -> int:
    from batchcast.api import train

    bar = sys.stderr.isatty()
    config_epochs = [0]

    def show(report: Any) -> None:
        config_epochs[0] = report.epochs
        if args.quiet:
            return
        mark = " *" if report.best else ""  # * = best epoch so far (kept with early stopping)
        line = (
            f"epoch {report.epoch}/{report.epochs}  loss {report.loss:.4f}  "
            f"{report.seconds:.1f}s{mark}"
        )
        if not bar:  # a log: one line per epoch
            print(line, file=sys.stderr)
            return
        done = int(30 * report.epoch / report.epochs)
        end = "\n" if report.epoch == report.epochs else ""
        progress = f"\r[{'#' * done}{'.' * (30 - done)}] {line}   "
        print(progress, end=end, file=sys.stderr, flush=True)

    result = train(
        args.train,
        hyperparameters=_read_json(args.hyperparameters),
        model_dir=args.model_dir,
        test=args.test,
        seed=args.seed,
        on_epoch=show,
    )
    if bar and not args.quiet and len(result.losses) < config_epochs[0]:
        print(file=sys.stderr)  # early stopping ended the bar before its last epoch
    for name, value in result.metrics.items():
        print(f"#{name}: {value:.6f}")  # SageMaker's metric log format
    print(f"model saved to {args.model_dir}", file=sys.stderr)
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from batchcast.api import predict

    response = predict(args.model, _read_json(args.request), seed=args.seed)
    sys.stdout.buffer.write(orjson.dumps(response) + b"\n")
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    from batchcast.api import import_gluonts

    loaded = import_gluonts(args.src, model_dir=args.model_dir)
    print(
        f"imported {args.src} -> {args.model_dir} "
        f"({loaded.spec.likelihood}, freq {loaded.spec.freq})"
    )
    return 0


def _transform_options(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {
        "workers": args.workers,
        "gpus_per_worker": args.gpus_per_worker,
        "on_error": args.on_error,
        "seed": args.seed,
        "batch_strategy": args.batch_strategy,
        "assemble_with": args.assemble_with,
        "max_payload_mb": args.max_payload_mb,
        "resume": args.resume or None,
        "shard_mb": args.shard_mb,
        "pipeline": args.pipeline,
        "data_type": args.data_type,
        "compression": args.compression,
        "name": args.job_name,
        "inference": args.inference_config,
    }
    return {k: v for k, v in options.items() if v is not None}


def _cmd_transform(args: argparse.Namespace) -> int:
    from batchcast.api import transform

    job = _read_json(args.job) if args.job else None
    summary = transform(
        args.model,
        args.input,
        args.output,
        job=job,
        progress=args.progress,
        forward_fields=args.forward_fields,
        **_transform_options(args),
    )
    _print_json(
        {
            "name": summary.name,
            "status": summary.status,
            "failure_reason": summary.failure_reason,
            "counts": summary.counts,
            "timings": summary.timings,
            "ignored": summary.job.get("ignored", []),
            "summary": summary.summary_uri,
        }
    )
    for error in summary.errors[:MAX_ERRORS_SHOWN]:
        print(
            f"RecordError: {error['uri']}:{error['line']}: field {error['field']!r}: "
            f"{error['message']}",
            file=sys.stderr,
        )
    if len(summary.errors) > MAX_ERRORS_SHOWN:
        more = len(summary.errors) - MAX_ERRORS_SHOWN
        print(f"... and {more} more; all are in {summary.summary_uri}", file=sys.stderr)
    if args.report:
        from batchcast.report import report_for_job

        report_for_job(summary.to_dict(), summary.job["input"], summary.job["output"], args.report)
        print(f"report: {args.report}", file=sys.stderr)
    return 0 if summary.ok else 1


def _cmd_demo(args: argparse.Namespace) -> int:
    from batchcast.demo import run_demo

    run_demo(Path(args.dir), workers=args.workers)
    return 0


# ---------------------------------------------------------------------------------------------
# Parser


def _fields(value: str) -> list[str]:
    return [f.strip() for f in value.split(",") if f.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="batchcast",
        description=(
            "DeepAR batch transform over JSON Lines on Ray: "
            "a drop-in for SageMaker Batch Transform."
        ),
    )
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser(
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
    t.add_argument("--compression", choices=["None", "Gzip"], help="CompressionType (default None)")
    t.add_argument(
        "--workers", type=int, help="model workers (default MODEL_SERVER_WORKERS or one per CPU)"
    )
    t.add_argument("--gpus-per-worker", type=float, help="GPUs per worker (default 0: CPU)")
    t.add_argument(
        "--on-error", choices=["fail-file", "record", "fail-fast"], help="default fail-file"
    )
    t.add_argument("--seed", type=int, help="job seed (default 0)")
    t.add_argument(
        "--forward-fields", type=_fields, help="input fields copied to outputs, e.g. item_id"
    )
    t.add_argument(
        "--batch-strategy",
        choices=["SingleRecord", "MultiRecord"],
        help="BatchStrategy: both accepted; records are always vectorised",
    )
    t.add_argument(
        "--assemble-with",
        choices=["Line", "None"],
        help="Line (default: each output record ends with a newline) or None (concatenated)",
    )
    t.add_argument("--max-payload-mb", type=float, help="largest record in MB (1-100, default 6)")
    t.add_argument(
        "--data-type", choices=["S3Prefix", "ManifestFile"], help="input kind (default S3Prefix)"
    )
    t.add_argument("--resume", action="store_true", help="skip inputs whose .out already exists")
    t.add_argument("--shard-mb", type=float, help="target shard size in MB (default 4)")
    t.add_argument(
        "--pipeline", choices=["auto", "fused", "split"], help="worker pipeline (default auto)"
    )
    t.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar (default: when stderr is a terminal)",
    )
    t.add_argument(
        "--report",
        metavar="HTML",
        help="also write a self-contained HTML page: the job summary, every record error, "
        "and fan charts of a few series",
    )
    t.set_defaults(func=_cmd_transform)

    tr = sub.add_parser("train", help="train a DeepAR model on SageMaker-format JSON Lines")
    tr.add_argument("--train", required=True, nargs="+", help="training channel file(s)")
    tr.add_argument(
        "--test", nargs="+", help="test channel file(s): reports test:RMSE and wQuantileLoss"
    )
    tr.add_argument(
        "--hyperparameters", required=True, help="hyperparameters JSON (SageMaker names)"
    )
    tr.add_argument("--model-dir", required=True, help="output model folder (or .tar.gz)")
    tr.add_argument(
        "--seed", type=int, default=0, help="training seed: the same seed, the same model"
    )
    tr.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    tr.set_defaults(func=_cmd_train)

    p = sub.add_parser(
        "predict", help="answer one online request {instances, configuration} in process"
    )
    p.add_argument("--model", required=True, help="model folder or model.tar.gz (local or s3://)")
    p.add_argument("request", nargs="?", default="-", help="request JSON file, or - for stdin")
    p.add_argument(
        "--seed", type=int, default=0, help="sampling seed: the same request, the same answer"
    )
    p.set_defaults(func=_cmd_predict)

    g = sub.add_parser("import-gluonts", help="convert a serialized GluonTS torch DeepAR predictor")
    g.add_argument("src", help="folder written by predictor.serialize()")
    g.add_argument("--model-dir", required=True, help="the batchcast model folder to write")
    g.set_defaults(func=_cmd_import)

    d = sub.add_parser(
        "demo", help="train a small model on generated data and transform a sample file"
    )
    d.add_argument("--dir", default="batchcast-demo", help="where to put data, model and output")
    d.add_argument("--workers", type=int, help="model workers (default one per CPU)")
    d.set_defaults(func=_cmd_demo)
    # Commands that live in their own rooms register their own parsers.
    add_report_parsers(sub)  # evaluate, plot, backtest
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        status: int = args.func(args)
    except BatchcastError as err:
        print(f"{type(err).__name__}: {err}", file=sys.stderr)
        return 1
    return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
