"""A transform's peak-RSS growth, measured in a fresh process (the bounded-memory tests)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

_RSS_CHILD = r"""
import json, sys
from batchcast.api import transform

def hwm_kb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])

model, warm, data, out, options = sys.argv[1:6]
options = json.loads(options)
transform(model, warm, out + "-warm", **options)  # imports, torch, threads
before = hwm_kb()
summary = transform(model, data, out, **options)
after = hwm_kb()
print(json.dumps({"grew_kb": after - before, "counts": summary.counts}))
"""


def transform_rss_growth(
    model: str, warm: Path, data: Path, out: Path, **options: Any
) -> dict[str, Any]:
    """Run a small warm-up job, then the job on ``data``, in a fresh process; how much its
    peak RSS grew over the second job (``grew_kb``), and that job's ``counts``."""
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            _RSS_CHILD,
            model,
            str(warm),
            str(data),
            str(out),
            json.dumps(options),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result
