"""The ``batchcast`` command line: argument parsing and printing only.

A :class:`BatchcastError` becomes ``Type: message`` on stderr and exit status 1; a job that
ends failed (a file with record errors) exits 1 after printing its summary.

Commands register themselves. A room that owns a command exposes, in a ``command`` module
that imports nothing heavy at module level, ``add_parser(subparsers)`` (or
``add_parsers(subparsers)`` for several): it adds its subparser(s) and sets ``func``, which
takes the parsed arguments and returns the exit status. Registering one is two lines here:
its import, and its entry in ``_REGISTER``::

    from batchcast.serve.command import add_parser as add_serve_parser
    _REGISTER = (..., add_serve_parser)
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from batchcast import __version__
from batchcast.errors import BatchcastError, one_line
from batchcast.report.command import add_parsers as add_report_parsers
from batchcast.runner.command import add_parser as add_transform_parser
from batchcast.runner.command import read_json
from batchcast.serve.command import add_parser as add_serve_parser

__all__ = ["build_parser", "main"]


# ---------------------------------------------------------------------------------------------
# The small commands: each calls batchcast.api and prints


def _cmd_train(args: argparse.Namespace) -> int:
    from batchcast.api import train
    from batchcast.runner.progress import EpochBar

    bar = EpochBar(quiet=args.quiet)
    result = train(
        args.train,
        hyperparameters=read_json(args.hyperparameters),
        model_dir=args.model_dir,
        test=args.test,
        seed=args.seed,
        on_epoch=bar,
    )
    bar.close()
    if result.scaling_losses:  # "auto" trained one network per scaling: say which one is kept
        kept = result.model.spec.scaling
        losses = ", ".join(f"{k} {v:.4f}" for k, v in result.scaling_losses.items())
        print(f"kept the {kept}-scaled network (validation loss: {losses})", file=sys.stderr)
    for name, value in result.metrics.items():
        print(f"#{name}: {value:.6f}")  # SageMaker's metric log format
    print(f"model saved to {args.model_dir}", file=sys.stderr)
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from batchcast.api import predict_body

    body = predict_body(args.model, read_json(args.request), seed=args.seed, accept=args.accept)
    sys.stdout.buffer.write(body if body.endswith(b"\n") else body + b"\n")
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    from batchcast.api import import_gluonts

    loaded = import_gluonts(args.src, model_dir=args.model_dir)
    print(
        f"imported {args.src} -> {args.model_dir} "
        f"({loaded.spec.likelihood}, freq {loaded.spec.freq})"
    )
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from batchcast.demo import run_demo

    run_demo(Path(args.dir), workers=args.workers)
    return 0


def _add_small_parsers(sub: Any) -> None:
    """``train``, ``predict``, ``import-gluonts`` and ``demo``."""
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
    p.add_argument(
        "--accept",
        help="the answer's type, as an Accept header: application/json (default, "
        "{predictions}), application/jsonlines (one object per instance) or text/csv",
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


# Every command, in --help's order (see the module docstring).
_REGISTER: tuple[Callable[[Any], object], ...] = (
    add_transform_parser,
    _add_small_parsers,
    add_report_parsers,  # evaluate, plot, backtest
    add_serve_parser,
)


def build_parser() -> argparse.ArgumentParser:
    """The ``batchcast`` parser with every registered command."""
    parser = argparse.ArgumentParser(
        prog="batchcast",
        description=(
            "DeepAR batch transform over JSON Lines on Ray: "
            "a drop-in for SageMaker Batch Transform."
        ),
    )
    parser.add_argument("--version", action="version", version=f"batchcast {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for register in _REGISTER:
        register(sub)
    return parser


DEBUG_ENV = "BATCHCAST_DEBUG"  # set (not "0"): an unexpected error shows its traceback
_MAX_MESSAGE = 500  # an unexpected error's message (a C++ library's can run to pages)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status.

    Every failure reaches the user as one ``Type: message`` line on stderr: batchcast's own
    errors, running out of memory (a network or batch too large for this machine), and, as a
    last resort, anything unexpected (a bug, or a library's failure), whose traceback
    ``BATCHCAST_DEBUG=1`` shows.
    """
    args = build_parser().parse_args(argv)
    try:
        status: int = args.func(args)
    except BatchcastError as err:
        print(f"{type(err).__name__}: {err}", file=sys.stderr)
        return 1
    except MemoryError:
        print(
            "MemoryError: out of memory; ask for less at once (mini_batch_size, num_cells, "
            "shard or batch sizes) or use a machine with more memory",
            file=sys.stderr,
        )
        return 1
    except Exception as err:  # the last line of defence: one line, never a traceback
        if os.environ.get(DEBUG_ENV, "0") not in ("", "0"):
            raise
        text = one_line(err) or "(no message)"
        text = text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 3] + "..."
        hint = f"(set {DEBUG_ENV}=1 for the traceback)"
        print(f"{type(err).__name__}: {text} {hint}", file=sys.stderr)
        return 1
    return status


def run() -> None:
    """The ``batchcast`` console script and ``python -m batchcast``: :func:`main`, then exit
    without the interpreter's teardown.

    Why: torch's teardown alone takes ~0.45 s (measured: ``python -c "import torch"`` runs that
    long after its last line), a tenth of a small job, and a finished command has nothing left
    to do: its output is committed and its summary written before :func:`main` returns. So the
    streams and logging are flushed and the process leaves with ``os._exit``. Not when Ray was
    imported (its exit hook stops the local cluster it started), nor with
    ``BATCHCAST_FULL_EXIT=1``.
    """
    code = main()
    if "ray" in sys.modules or os.environ.get("BATCHCAST_FULL_EXIT", "") not in ("", "0"):
        sys.exit(code)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):  # a closed pipe: nothing more can be said anyway
        code = code or 1
    logging.shutdown()
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    run()
