"""The documented cluster recipe, for real: ``ray start --head`` + ``ray job submit``.

A separate local cluster started with the ``ray`` CLI (not this process's Ray: this module
uses none), a ``batchcast transform`` submitted to it, the output checked on disk (the driver
of a submitted job runs on the head node, so local paths work).

Measured with Ray 2.60 (RAY_NOTES.md): ``ray start`` enables token authentication by default
and writes the token to ``~/.ray/auth_token``; the dashboard then answers 401 to a client
without it, and ``ray job submit`` only sends it when ``RAY_AUTH_MODE=token`` is set on the
client. ``test_submit_without_ray_auth_mode_is_refused`` pins that.

The cluster is started with ``--block`` in its own session and stopped by SIGTERM to that one
process, which drains and stops every process it started: ``ray stop`` would kill every Ray
process on the machine, other people's included. Its ``--temp-dir`` is private, so the
``ray_current_cluster`` address file it writes cannot mislead a later ``ray.init()``.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from transform_harness import dumps, inference_records, write_lines

pytestmark = pytest.mark.slow

RAY = str(Path(sys.executable).with_name("ray"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(**extra: str) -> dict[str, str]:
    """This environment, minus anything that would point at another cluster, venv first on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def _wait_for_dashboard(url: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"ray start exited with {process.returncode}")
        try:
            urllib.request.urlopen(f"{url}/api/version", timeout=2)
            return
        except urllib.error.HTTPError:
            return  # 401 with token auth on: it is up and answering
        except OSError:
            time.sleep(0.25)
    raise TimeoutError(f"the Ray dashboard at {url} did not come up in {timeout} s")


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, Any]]:
    """A head node on free ports (2 CPUs, dashboard on 127.0.0.1); its addresses."""
    temp_dir = tempfile.mkdtemp(prefix="bc-ray-", dir="/tmp")  # short: socket paths are limited
    gcs_port, dashboard_port = _free_port(), _free_port()
    # Token auth made explicit, with a token of the test's own: a fresh home has no
    # ~/.ray/auth_token, and ``ray start`` then runs without auth (measured), which would
    # make the refusal test depend on what ran on this machine before.
    token_path = os.path.join(temp_dir, "auth_token")
    Path(token_path).write_text(secrets.token_hex(32))
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": token_path}
    log = open(os.path.join(temp_dir, "ray-start.log"), "wb")  # noqa: SIM115  # closed below
    command = [
        RAY, "start", "--head", "--block",
        f"--port={gcs_port}",
        "--num-cpus=2",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dashboard_port}",
        "--include-dashboard=true",
        f"--ray-client-server-port={_free_port()}",
        f"--dashboard-agent-listen-port={_free_port()}",
        f"--temp-dir={temp_dir}",
        "--disable-usage-stats",
    ]  # fmt: skip
    process = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, env=_env(**auth), start_new_session=True
    )
    url = f"http://127.0.0.1:{dashboard_port}"
    try:
        _wait_for_dashboard(url, process, timeout=90)
        yield {"url": url, "gcs_port": gcs_port, "auth": auth}
    finally:
        process.send_signal(signal.SIGTERM)  # drains, then stops the processes it started
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # its own session: only its processes
            process.wait()
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


def _submit(url: str, *entrypoint: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [RAY, "job", "submit", "--address", url, "--", *entrypoint],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


def test_submitted_transform_runs_on_the_cluster(
    cluster: dict[str, Any], tiny_model: str, tmp_path: Path
) -> None:
    records = inference_records(200, seed=70)
    source = write_lines(tmp_path / "in" / "part-0.jsonl", dumps(records))
    output = tmp_path / "out"
    done = _submit(
        cluster["url"],
        sys.executable, "-m", "batchcast", "transform",
        "--model", tiny_model,
        "--input", str(source.parent),
        "--output", str(output),
        "--forward-fields", "item_id",
        "--shard-mb", "0.01",  # several shards: one shard would get one worker
        env=_env(**cluster["auth"]),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "succeeded" in done.stdout + done.stderr
    lines = (output / "part-0.jsonl.out").read_bytes().split(b"\n")[:-1]
    assert [orjson.loads(line)["item_id"] for line in lines] == [r["item_id"] for r in records]
    summary = orjson.loads((output / "_batchcast_summary.json").read_bytes())
    assert summary["status"] == "Completed"
    # The driver joined the submitted-to cluster (RAY_ADDRESS set by the job supervisor)
    # instead of starting a Ray of its own.
    assert summary["cluster"]["address"].endswith(f":{cluster['gcs_port']}")
    assert summary["counts"]["workers"] == 2


def test_a_failed_transform_fails_the_submitted_job(
    cluster: dict[str, Any], tiny_model: str, tmp_path: Path
) -> None:
    lines = dumps(inference_records(20, seed=71))
    lines[4] = b'{"start": "2020-01-01 00:00:00+00:00", "target": [1, 2, 3]}'
    source = write_lines(tmp_path / "in" / "bad.jsonl", lines)
    done = _submit(
        cluster["url"],
        sys.executable, "-m", "batchcast", "transform",
        "--model", tiny_model, "--input", str(source), "--output", str(tmp_path / "out"),
        env=_env(**cluster["auth"]),
    )  # fmt: skip
    assert done.returncode == 1  # the CLI's exit status becomes the job's, then the client's
    assert f"RecordError: {source}:5: field 'start'" in done.stdout + done.stderr
    assert not (tmp_path / "out" / "bad.jsonl.out").exists()


def test_submit_without_ray_auth_mode_is_refused(cluster: dict[str, Any]) -> None:
    done = _submit(cluster["url"], sys.executable, "-c", "print('never runs')", env=_env())
    assert done.returncode != 0
    assert "Authentication required" in done.stderr
    assert "RAY_AUTH_MODE" in done.stderr
