"""Benchmarks of mensageria against raw pika and a Celery baseline (see README.md).

Not collected by pytest (``testpaths = ["tests"]``); run with ``make bench`` or
``.venv/bin/python -m benchmarks.run``.
"""

import warnings

# nameko 2.x imports eventlet, which announces its deprecation on import (here and in spawned children)
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")
