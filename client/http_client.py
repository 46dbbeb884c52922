"""HTTP client: POST /ie/prediction with Paddle Serving's key/value JSON.

python -m client.http_client --task uie --schema '["人物"]' "张伟出生于杭州。"
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.request
from typing import Any

from client.request import ServiceError, build_request, parse_response

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
) -> list[dict]:
    """One result per text (or per-text error objects); raises ServiceError on request errors."""
    kv = build_request(task, texts, schema, position_prob)
    answer = post_raw({"key": list(kv), "value": list(kv.values())}, url, timeout)
    return parse_response(
        int(answer.get("err_no", 0)),
        answer.get("err_msg", ""),
        answer.get("key", []),
        answer.get("value", []),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Query the IE service over HTTP.")
    parser.add_argument("texts", nargs="+")
    parser.add_argument("--task", choices=["uie", "spo"], required=True)
    parser.add_argument("--schema", help="UIE schema as JSON")
    parser.add_argument("--position-prob", type=float)
    parser.add_argument("--url", default=DEFAULT_URL)
    args = parser.parse_args(argv)
    texts = args.texts[0] if len(args.texts) == 1 else args.texts
    try:
        result = predict(args.task, texts, args.schema, args.position_prob, args.url)
    except ServiceError as e:
        print(f"error {e.err_no}: {e.err_msg}", file=sys.stderr)
        return 1
    print(json.dumps(result, ensure_ascii=False, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
