"""RPC client: Paddle Serving's ``PipelineClient`` on port 8088.

python -m client.rpc_client --task spo "张伟出生于杭州。"
"""

from __future__ import annotations

import sys
from typing import Any

from client import cli
from client.request import build_request, parse_response

DEFAULT_ENDPOINT = "127.0.0.1:8088"


def connect(endpoint: str = DEFAULT_ENDPOINT):
    """A connected ``PipelineClient``."""
    from pipeline.paddle_serving.compat import PipelineClient

    client = PipelineClient()
    client.connect([endpoint])
    return client


def predict(
    task: str,
    texts: str | list[str],
    schema: Any = None,
    position_prob: float | None = None,
    client=None,
    endpoint: str = DEFAULT_ENDPOINT,
    model: str | None = None,
) -> list[dict]:
    """One result per text (or per-text error objects); raises ServiceError on request errors."""
    client = client or connect(endpoint)
    resp = client.predict(feed_dict=build_request(task, texts, schema, position_prob, model), fetch=None)
    return parse_response(resp.err_no, resp.err_msg, list(resp.key), list(resp.value))


def main(argv: list[str] | None = None) -> int:
    """CLI: ``python -m client.rpc_client --task spo [--endpoint HOST:PORT] TEXT [TEXT ...]``."""
    p = cli.parser("Query the IE service over RPC (PipelineClient).")
    p.add_argument("--endpoint", default=DEFAULT_ENDPOINT)
    args = p.parse_args(argv)
    return cli.run(
        args,
        lambda texts: predict(
            args.task, texts, args.schema, args.position_prob, endpoint=args.endpoint, model=args.model
        ),
    )


if __name__ == "__main__":
    sys.exit(main())
