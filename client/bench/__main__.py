"""``python -m client.bench``: the benchmark (client/bench/benchmark.py)."""

import sys

from client.bench.benchmark import main

sys.exit(main())
