"""Serving throughput: closed-loop HTTP clients against ``batchcast serve``, both hosts.

    python -m benchmarks.serve            # ~10 minutes on 2 cores
    python -m benchmarks.serve --quick    # ~5 minutes: shorter windows, same cases
    python -m benchmarks.serve --quick --hosts uvicorn --modes batched,echo --concurrency 1,32

Cases, in one run: the uvicorn host and the Ray Serve host, each with batching on, batching
off (``--no-batching``) and the echo handler (``--echo``: the same routes and HTTP stack,
``/invocations`` answers with its body and no model: the HTTP ceiling); JSON Lines requests
of 1 and 100 series of the default work unit (hourly, 1,000-point series, 24 steps, 2 x 40
cells, 100 paths, mean + 9 quantiles); closed-loop clients at concurrency 1, 8, 32 and 64.
Each server runs in its own process with one worker per core; the clients run in this
process on one event loop (a minimal keep-alive HTTP/1.1 client over asyncio streams, far
cheaper per request than httpx) and their CPU time is reported, since they share the cores.

The baseline of the 100-series cases, the batch transform's series/s, runs in the same run
(``batchcast.api.transform`` of the same kind of series on this machine's cores); its rate
is reported whole and after the workers are ready.

Each case prints one JSON line: requests/s, series/s, latency p50/p99 (ms), errors, client
CPU; a final ``summary`` line holds the ratios the issue sets goals for (at concurrency 32,
and under ``by_concurrency`` at each one measured), and each rate per worker against
SageMaker's 1-3 series/s per worker.

A case at concurrency c starts c requests at once; with requests that take long (100 series)
the first completions come early and the queue is only full after one round of c requests.
So a case's warm-up is at least one such round and its window two, estimated from the same
server's latency at concurrency 1 (capped: ``--max-round-s``), and both are reported.
``--append-results`` adds table rows to ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import (
    HelpFormatter,
    WorkUnit,
    add_results_flag,
    append_results,
    emit,
    int_list,
)
from benchmarks.data import DataSpec

BENCHMARK = "serve"
SAGEMAKER_SERIES_PER_S_PER_WORKER = 3.0  # the upper end of SageMaker's 1-3 (SPEC.md §7)
MODES = ("batched", "unbatched", "echo")
HOSTS = ("uvicorn", "ray")
START_TIMEOUT_S = 180.0


# ---------------------------------------------------------------------------------------------
# A minimal closed-loop HTTP/1.1 client


@dataclass
class CaseResult:
    """What the clients of one case saw inside the measured window."""

    latencies: list[float]
    errors: int
    window_s: float
    client_cpu_s: float


async def _read_response(reader: asyncio.StreamReader) -> int:
    """Read one response; its status (the body is read and dropped)."""
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("the server closed the connection")
    status = int(status_line.split(b" ", 2)[1])
    length, chunked = 0, False
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.partition(b":")
        key = name.strip().lower()
        if key == b"content-length":
            length = int(value)
        elif key == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if not chunked:
        await reader.readexactly(length)
        return status
    while True:
        size = int((await reader.readline()).split(b";")[0], 16)
        await reader.readexactly(size + 2)  # the chunk and its CRLF
        if size == 0:
            return status


async def _client(
    host: str,
    port: int,
    requests: Sequence[bytes],
    offset: int,
    start: float,
    stop: float,
    result: CaseResult,
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        k = offset
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            writer.write(requests[k % len(requests)])
            await writer.drain()
            k += 1
            status = await _read_response(reader)
            t1 = time.perf_counter()
            # Completions inside the window: in a closed loop at steady state, the rate; big
            # requests take longer than a short window, so their start is not required in it.
            if start <= t1 <= stop:
                if status == 200:
                    result.latencies.append(t1 - t0)
                else:
                    result.errors += 1
    finally:
        writer.close()


def run_case(
    host: str, port: int, requests: Sequence[bytes], *, concurrency: int, warmup_s: float,
    window_s: float,
) -> CaseResult:  # fmt: skip
    """``concurrency`` clients, each sending requests back to back for warm-up + window."""

    async def main() -> CaseResult:
        result = CaseResult([], 0, window_s, 0.0)
        start = time.perf_counter() + warmup_s
        stop = start + window_s
        cpu0 = time.process_time()
        await asyncio.gather(
            *(
                _client(host, port, requests, i * 7919, start, stop, result)
                for i in range(concurrency)
            )
        )
        result.client_cpu_s = time.process_time() - cpu0
        return result

    try:
        import uvloop

        return uvloop.run(main())
    except ImportError:  # pragma: no cover  # uvloop comes with uvicorn[standard]
        return asyncio.run(main())


def http_requests(lines: Sequence[bytes], *, series: int, host: str, port: int) -> list[bytes]:
    """Distinct JSON Lines requests of ``series`` lines each, as raw HTTP/1.1 bytes."""
    out = []
    count = max(1, min(64, len(lines) // series))
    for i in range(count):
        body = b"".join(line + b"\n" for line in lines[i * series : (i + 1) * series])
        head = (
            f"POST /invocations HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Type: application/jsonlines\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        out.append(head.encode() + body)
    return out


# ---------------------------------------------------------------------------------------------
# Servers


@dataclass
class Running:
    """A server under test: its port and its stderr (the access log) so far."""

    port: int
    log: Any

    def log_text(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")


@contextmanager
def server(host_kind: str, mode: str, model_dir: Path, *, workers: int) -> Iterator[Running]:
    """``batchcast serve`` in a subprocess on 127.0.0.1; yields it once /ping is 200."""
    command = [sys.executable, "-m", "batchcast.serve.command", "--model", str(model_dir)]
    command += ["--host", "127.0.0.1", "--port", "0", "--workers", str(workers)]
    if host_kind == "ray":
        command.append("--ray")
    if mode == "unbatched":
        command.append("--no-batching")
    elif mode == "echo":
        command.append("--echo")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.pop("DEEPAR_INFERENCE_CONFIG", None)  # the work unit's configuration is the default
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log, env=env)
        try:
            port = _wait_listening(process, log)
            _wait_ping(port)
            yield Running(port, log)
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_listening(process: subprocess.Popen[bytes], log: Any) -> int:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        log.seek(0)
        text = log.read().decode(errors="replace")
        match = re.search(r"listening on http://[\d.]+:(\d+)", text)
        if match:
            return int(match.group(1))
        if process.poll() is not None:
            raise RuntimeError(f"batchcast serve exited {process.returncode}:\n{text[-2000:]}")
        time.sleep(0.1)
    raise TimeoutError("batchcast serve did not start")


def _wait_ping(port: int) -> None:
    import httpx

    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ping", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise TimeoutError("/ping did not answer 200")


# ---------------------------------------------------------------------------------------------
# The model, the data and the batch transform baseline


def prepare_model(folder: Path, unit: WorkUnit) -> Path:
    """The work unit's network at its initial weights (speed does not depend on them)."""
    from batchcast.models import save_model
    from benchmarks.sampling import default_model

    path = folder / "model"
    if not (path / "config.json").exists():
        save_model(default_model(unit, seed=0), str(path))
    return path


def transform_baseline(model_dir: Path, lines: Sequence[bytes], folder: Path) -> dict[str, Any]:
    """The batch transform's series/s on this machine's cores, over ``lines``."""
    import ray

    from batchcast.api import transform

    data = folder / "transform-input.jsonl"
    data.write_bytes(b"".join(line + b"\n" for line in lines))
    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    try:
        summary = transform(str(model_dir), str(data), str(folder / "transform-out"))
    finally:
        ray.shutdown()
    total_s = float(summary.timings["total_s"] or 0.0)
    steady_s = total_s - float(summary.timings.get("workers_ready_s") or 0.0)
    series = summary.counts["series"]
    return {
        "series": series,
        "workers": summary.counts["workers"],
        "total_s": total_s,
        "series_per_s": series / total_s if total_s > 0 else 0.0,
        "series_per_s_after_ready": series / steady_s if steady_s > 0 else 0.0,
    }


# ---------------------------------------------------------------------------------------------
# The run


def mean_batch(log: str) -> float | None:
    """The mean ``batch=`` of the access lines in ``log``: requests per forecast call, as each
    request saw it (only the uvicorn host's log holds them; Serve keeps replica logs apart)."""
    sizes = [int(m) for m in re.findall(r" batch=(\d+) ", log)]
    return sum(sizes) / len(sizes) if sizes else None


def _fields(result: CaseResult, series: int) -> dict[str, Any]:
    done = len(result.latencies)
    ordered = sorted(result.latencies)

    def pct(q: float) -> float | None:
        return 1000.0 * ordered[min(done - 1, int(q * done))] if done else None

    rps = done / result.window_s
    return {
        "requests_per_s": rps,
        "series_per_s": rps * series,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "requests": done,
        "errors": result.errors,
        "window_s": result.window_s,
        "client_cpu_share": result.client_cpu_s / result.window_s,
    }


def describe(record: Mapping[str, Any]) -> str:
    if record["case"] == "summary":
        keys = ("batching_gain", "p99_ms", "vs_echo", "ray_vs_uvicorn", "vs_transform")
        return ", ".join(f"{k} {record.get(k)}" for k in keys)
    if record["case"] == "transform":
        after = record["series_per_s_after_ready"]
        return f"{record['series_per_s']:.0f} series/s ({after:.0f} after the workers are ready)"
    return (
        f"{record['requests_per_s']:.0f} req/s, {record['series_per_s']:.0f} series/s, "
        f"p50 {record['p50_ms']} ms, p99 {record['p99_ms']} ms, {record['errors']} errors"
    )


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if not a or not b else a / b


def summarize(
    rates: Mapping[tuple[str, str, int, int], dict[str, Any]],
    transform: Mapping[str, Any],
    workers: int,
) -> dict[str, Any]:
    """The issue's goals, as ratios of this run's cases."""

    def get(host: str, mode: str, series: int, c: int, key: str) -> Any:
        record = rates.get((host, mode, series, c))
        return None if record is None else record[key]

    rps = "requests_per_s"
    hundred = [r["series_per_s"] for k, r in rates.items() if k[:3] == ("uvicorn", "batched", 100)]
    best_100 = max(hundred, default=None)
    on = get("uvicorn", "batched", 1, 32, rps)
    by_concurrency = {}
    for c in sorted({k[3] for k in rates}):
        on_c = get("uvicorn", "batched", 1, c, rps)
        by_concurrency[str(c)] = {
            "batching_gain": _ratio(on_c, get("uvicorn", "unbatched", 1, c, rps)),
            "p99_ms": get("uvicorn", "batched", 1, c, "p99_ms"),
            "vs_echo": _ratio(on_c, get("uvicorn", "echo", 1, c, rps)),
            "ray_vs_uvicorn": _ratio(get("ray", "batched", 1, c, rps), on_c),
            "ray_batching_gain": _ratio(
                get("ray", "batched", 1, c, rps), get("ray", "unbatched", 1, c, rps)
            ),
            "ray_vs_echo": _ratio(get("ray", "batched", 1, c, rps), get("ray", "echo", 1, c, rps)),
            "vs_transform_100_series": _ratio(
                get("uvicorn", "batched", 100, c, "series_per_s"),
                transform["series_per_s_after_ready"],
            ),
        }
    return {
        "batching_gain": _ratio(on, get("uvicorn", "unbatched", 1, 32, rps)),
        "p99_ms": get("uvicorn", "batched", 1, 32, "p99_ms"),
        "vs_echo": _ratio(on, get("uvicorn", "echo", 1, 32, rps)),
        "ray_vs_uvicorn": _ratio(get("ray", "batched", 1, 32, rps), on),
        "best_100_series_per_s": best_100,
        "vs_transform": _ratio(best_100, transform["series_per_s_after_ready"]),
        "series_per_s_per_worker_1_series_c32": None if on is None else on / workers,
        "vs_sagemaker_1_series_c32": None
        if on is None
        else on / workers / SAGEMAKER_SERIES_PER_S_PER_WORKER,
        "vs_sagemaker_100_series": None
        if best_100 is None
        else best_100 / workers / SAGEMAKER_SERIES_PER_S_PER_WORKER,
        "workers": workers,
        "by_concurrency": by_concurrency,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.serve", description=__doc__, formatter_class=HelpFormatter
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="shorter windows: about 2-4 s per case, ~5 minutes in all",
    )
    parser.add_argument("--concurrency", type=int_list, default=[1, 8, 32, 64])
    parser.add_argument("--series", type=int_list, default=[1, 100], help="series per request")
    parser.add_argument("--hosts", default=",".join(HOSTS), help="uvicorn,ray")
    parser.add_argument("--modes", default=",".join(MODES), help="batched,unbatched,echo")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--transform-series", type=int, default=None, help="baseline size (0: no baseline)"
    )
    parser.add_argument(
        "--max-round-s",
        type=float,
        default=None,
        help="cap on a case's estimated round (warm-up: one, window: two); default 3 with "
        "--quick, else 20",
    )
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "bc-serve")
    add_results_flag(parser)
    args = parser.parse_args(argv)
    warmup_s, window_s = (0.5, 1.5) if args.quick else (1.0, 4.0)
    max_round_s = (
        args.max_round_s if args.max_round_s is not None else (3.0 if args.quick else 20.0)
    )
    hosts = [h for h in args.hosts.split(",") if h]
    modes = [m for m in args.modes.split(",") if m]
    unit = WorkUnit()
    args.workdir.mkdir(parents=True, exist_ok=True)
    model_dir = prepare_model(args.workdir, unit)
    lines = DataSpec(series=max(args.series) * 64, freq=unit.freq, length=unit.length).lines()
    records: list[dict[str, Any]] = []
    transform_series = args.transform_series
    if transform_series is None:
        transform_series = 3000 if args.quick else 8000
    baseline: dict[str, Any] = {"series_per_s_after_ready": None}
    if transform_series:
        transform_lines = DataSpec(series=transform_series, length=unit.length, seed=1).lines()
        baseline = transform_baseline(model_dir, transform_lines, args.workdir)
        records.append(emit(BENCHMARK, "transform", baseline))
    rates: dict[tuple[str, str, int, int], dict[str, Any]] = {}
    for host_kind in hosts:
        for mode in modes:
            with server(host_kind, mode, model_dir, workers=args.workers) as running:
                port = running.port
                for series in args.series:
                    requests = http_requests(lines, series=series, host="127.0.0.1", port=port)
                    alone_s: float | None = None  # latency at concurrency 1 (s)
                    for c in sorted(args.concurrency):
                        seen = len(running.log_text())
                        # Big requests take long: a longer window holds enough of them.
                        window = window_s * (2 if series >= 100 and mode != "echo" else 1)
                        warmup = warmup_s
                        if alone_s is not None:  # one round: c requests over the workers
                            round_s = min(max_round_s, alone_s * c / args.workers)
                            warmup, window = max(warmup, round_s), max(window, 2 * round_s)
                        result = run_case(
                            "127.0.0.1", port, requests, concurrency=c, warmup_s=warmup,
                            window_s=window,
                        )  # fmt: skip
                        if c == 1 and result.latencies:
                            alone_s = sorted(result.latencies)[len(result.latencies) // 2]
                        fields = {
                            "host": host_kind,
                            "mode": mode,
                            "series_per_request": series,
                            "concurrency": c,
                            "workers": args.workers,
                            **_fields(result, series),
                            "warmup_s": warmup,
                            "mean_batch": mean_batch(running.log_text()[seen:]),
                            "unit": unit.describe(),
                        }
                        case = f"{host_kind}-{mode}-s{series}-c{c}"
                        records.append(emit(BENCHMARK, case, fields))
                        rates[(host_kind, mode, series, c)] = fields
    records.append(emit(BENCHMARK, "summary", summarize(rates, baseline, args.workers)))
    if args.append_results:
        append_results(args.append_results, records, describe)
    return 0


if __name__ == "__main__":
    sys.exit(main())
