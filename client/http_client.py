"""HTTP client: POST /ie/prediction with Paddle Serving's key/value JSON.

python -m client.http_client --task uie --schema '["人物"]' "张伟出生于杭州。"
"""

from __future__ import annotations

import json
import sys
import urllib.request
from typing import Any

from client import cli
from client.request import build_request, parse_response

DEFAULT_URL = "http://127.0.0.1:18082/ie/prediction"


def post_raw(payload: dict[str, Any], url: str = DEFAULT_URL, timeout: float = 60.0) -> dict[str, Any]:
    """POST a JSON body and return the decoded JSON answer (any HTTP status)."""
    body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read().decode("utf-8"))
    except urllib.error.HTTPError as e:
        return json.loads(e.read().decode("utf-8") or "{}")


def predict(
    task: str,
    texts: str | list[str],
    schema: Any = None,
    position_prob: float | None = None,
    url: str = DEFAULT_URL,
    timeout: float = 60.0,
    model: str | None = None,
) -> list[dict]:
    """One result per text (or per-text error objects); raises ServiceError on request errors."""
    kv = build_request(task, texts, schema, position_prob, model)
    answer = post_raw({"key": list(kv), "value": list(kv.values())}, url, timeout)
    return parse_response(
        int(answer.get("err_no", 0)),
        answer.get("err_msg", ""),
        answer.get("key", []),
        answer.get("value", []),
    )


def main(argv: list[str] | None = None) -> int:
    """CLI: ``python -m client.http_client --task spo [--url URL] TEXT [TEXT ...]``."""
    p = cli.parser("Query the IE service over HTTP.")
    p.add_argument("--url", default=DEFAULT_URL)
    args = p.parse_args(argv)
    return cli.run(
        args,
        lambda texts: predict(args.task, texts, args.schema, args.position_prob, args.url, model=args.model),
    )


if __name__ == "__main__":
    sys.exit(main())
