"""``examples/serve_config.yaml`` works with Ray Serve's own command, ``serve run``.

The example is run as documented, with three changes a deployment would make: the model's
path, the HTTP address (loopback, a free port) and the inference configuration in its
``runtime_env`` (distinctive, so the test sees that it reached the replicas). ``serve run
--address local`` starts a private Ray (never a cluster found on the machine).
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import httpx
import orjson
import pytest
import yaml
from ray.serve.schema import ServeDeploySchema
from serve_cases import free_port, instance, wait_ready

from batchcast.errors import ConfigError
from batchcast.serve.ray_host import app_builder
from batchcast.serve.settings import ServeSettings

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "serve_config.yaml"


def test_the_example_is_a_valid_serve_config() -> None:
    config = ServeDeploySchema.model_validate(yaml.safe_load(EXAMPLE.read_text()))
    [app] = config.applications
    assert app.import_path == "batchcast.serve.ray_host:app_builder"
    assert app.route_prefix == "/"


def test_the_builder_reads_its_args_into_the_deployment() -> None:
    app = app_builder(
        {"model": "m", "workers": "3", "body_timeout_s": "5", "batch_rows": 100, "seed": 7}
    )
    deployment = app._bound_deployment  # what Serve deploys: the settings travel whole
    settings = ServeSettings.from_json(deployment.init_args[0])
    assert (settings.model, settings.workers, settings.seed) == ("m", 3, 7)
    assert (settings.body_timeout_s, settings.batch.max_rows) == (5.0, 100)
    assert deployment.num_replicas == 3


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ({"model": "m", "timeout": 5}, "unknown Serve config arg"),
        ({"model": "m", "body_timeout_s": "soon"}, "body_timeout_s"),
        ({"model": "m", "body_timeout_s": 0}, "body_timeout_s"),
        ({"workers": 2}, "must name the model"),
    ],
)
def test_the_builder_refuses_bad_args(args: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        app_builder(args)


@pytest.mark.slow
def test_serve_run_of_the_example(model_dir: str, tmp_path: Path) -> None:
    config = yaml.safe_load(EXAMPLE.read_text())
    port = free_port()
    config["http_options"].update(host="127.0.0.1", port=port)
    [app] = config["applications"]
    app["args"]["model"] = model_dir
    app["runtime_env"]["env_vars"]["DEEPAR_INFERENCE_CONFIG"] = orjson.dumps(
        {"num_samples": 20, "quantiles": ["0.3", "0.7"]}
    ).decode()
    path = tmp_path / "serve_config.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    log = tmp_path / "serve_run.log"  # what serve run said, for a failure's message
    with log.open("wb") as out:
        process = subprocess.Popen(
            ["serve", "run", "--address", "local", str(path)],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            # An ignored SIGINT is inherited (a runner started in the background by a
            # non-interactive shell ignores it): serve run would never see the test's Ctrl-C.
            preexec_fn=_default_sigint,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url)
        response = httpx.post(
            f"{url}/invocations",
            content=orjson.dumps({"instances": [instance(0), instance(1)]}),
            headers={"Content-Type": "application/json"},
            timeout=60,
        )
        assert response.status_code == 200, response.text
        predictions = response.json()["predictions"]
        assert [list(p["quantiles"]) for p in predictions] == [["0.3", "0.7"]] * 2
        assert httpx.get(f"{url}/execution-parameters").json()["MaxConcurrentTransforms"] == 4
    finally:
        process.send_signal(signal.SIGINT)  # serve run's way out: it deletes the app
        try:
            code = process.wait(timeout=60)
            assert code == 0, log.read_text(errors="replace")[-3000:]
        except subprocess.TimeoutExpired:
            pytest.fail("serve run did not exit after SIGINT:\n" + log.read_text()[-3000:])
        finally:
            if process.poll() is None:
                process.kill()


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
