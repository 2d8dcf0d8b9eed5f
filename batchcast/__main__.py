"""``python -m batchcast``."""

from batchcast.cli import run

run()
