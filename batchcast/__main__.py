"""``python -m batchcast``."""

import sys

from batchcast.cli import main

sys.exit(main())
