"""The naive baseline: a Flask app calling the backend once per request, no batching.

python -m client.bench.naive_server --models serving_model --backend onnx --port 18090

It takes the service's HTTP body (``POST /ie/prediction``, Paddle Serving's key/value JSON) and
does the same work per request (validate, tokenize, engine, decode), on Flask's threaded
development server: the wrapper people write first.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from client.bench.common import ENGINES

logger = logging.getLogger(__name__)

CALLS_AT_ONCE = 64  # engine calls of one model at once: ie.engine_instances' top, above any load


class NaiveService:
    """The service core (:class:`~pipeline.service.IEService`) called in-process; no server of its own.

    :meth:`answer_many` runs a batch of requests the way the service's model op does (one engine
    pass per stage over all their rows); :meth:`answer` is a batch of one. ``batch_requests``: at
    most this many requests in one engine call (1: calls of different callers never merge); calls
    of one model at once: ``settings.engine_instances``.
    """

    def __init__(self, settings, batch_requests: int = 16):
        from pipeline.service import IEService

        self.core = IEService(settings, settings.backend, batch_requests=batch_requests)
        self.core.start_engines()

    def answer(self, body: dict[str, Any]) -> dict[str, Any]:
        """Paddle Serving's ``{"err_no", "err_msg", "key", "value"}`` for one request."""
        return self.answer_many([body])[0]

    def answer_many(self, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """One Paddle Serving answer per request body; requests' rows share engine batches."""
        from pipeline.errors import IEError, InvalidRequest
        from pipeline.schemas import RESULT_KEY

        def error(e: IEError) -> dict[str, Any]:
            return {"err_no": e.err_no, "err_msg": e.message, "key": ["error_type"], "value": [e.kind]}

        answers: list[dict[str, Any] | None] = [None] * len(bodies)
        jobs: dict[int, Any] = {}
        for i, body in enumerate(bodies):
            try:
                if not isinstance(body, dict) or len(body.get("key", [])) != len(body.get("value", [])):
                    raise InvalidRequest("the body must be {'key': [...], 'value': [...]} of equal lengths")
                jobs[i] = self.core.prepare(dict(zip(body["key"], body["value"], strict=True)))
            except IEError as e:
                answers[i] = error(e)
        self.core.run(list(jobs.values()))
        for i, job in jobs.items():
            try:
                answers[i] = {
                    "err_no": 0,
                    "err_msg": "",
                    "key": [RESULT_KEY],
                    "value": [self.core.finish(job)],
                }
            except IEError as e:
                answers[i] = error(e)
        return answers  # type: ignore[return-value]


def create_app(service: NaiveService):
    """The Flask app: ``POST /ie/prediction``."""
    from flask import Flask, Response, request

    app = Flask("naive_ie")

    @app.post("/ie/prediction")
    def prediction() -> Response:
        answer = service.answer(request.get_json(force=True))
        return Response(json.dumps(answer, ensure_ascii=False), mimetype="application/json")

    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, required=True, help="folder with uie/ and spo/")
    parser.add_argument("--backend", choices=ENGINES, required=True, help="onnx-int8: the INT8 file")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=2, help="engine intra-op threads")
    parser.add_argument("--pylib", type=Path, help="folder holding Flask (the benchmark's --setup)")
    args = parser.parse_args(argv)
    if args.pylib:
        sys.path.append(str(args.pylib))
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    from client.bench.common import bench_settings

    # a global model in a Flask app: each request thread makes its own engine call at once, never
    # merged with another's and never waiting for one
    settings = bench_settings(args.models, args.backend, args.threads, instances=CALLS_AT_ONCE)
    app = create_app(NaiveService(settings, batch_requests=1))
    app.run(host="127.0.0.1", port=args.port, threaded=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
