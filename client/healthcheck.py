"""Container health check: exit 0 when the service reports ready (KServe v2 readiness endpoint).

python -m client.healthcheck [URL]     default $IE_HEALTH_URL or http://127.0.0.1:8000/v2/health/ready
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

DEFAULT_URL = "http://127.0.0.1:8000/v2/health/ready"


def is_ready(url: str, timeout: float = 3.0) -> bool:
    """True when ``url`` answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    url = args[0] if args else os.environ.get("IE_HEALTH_URL", DEFAULT_URL)
    return 0 if is_ready(url) else 1


if __name__ == "__main__":
    sys.exit(main())
