"""The command line both clients share: texts, task, schema, position_prob; readable JSON out."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from client.request import ServiceError


def parser(description: str) -> argparse.ArgumentParser:
    """Arguments common to the HTTP and RPC command lines; each adds its address."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("texts", nargs="+", help="one text, or several (sent as one request)")
    p.add_argument("--task", choices=["uie", "spo"], required=True)
    p.add_argument("--schema", help="UIE schema as JSON")
    p.add_argument("--position-prob", type=float)
    p.add_argument("--model", help="a served model's name (default: the task's default model)")
    return p


def run(args: argparse.Namespace, predict: Callable[[str | list[str]], list[dict]]) -> int:
    """Print ``predict``'s results as indented JSON (exit 0), or a request error on stderr (exit 1)."""
    texts = args.texts[0] if len(args.texts) == 1 else args.texts
    try:
        result = predict(texts)
    except ServiceError as e:
        print(f"error {e.err_no}: {e.err_msg}", file=sys.stderr)
        return 1
    print(json.dumps(result, ensure_ascii=False, indent=2))
    return 0
