"""A server tokenizes in its request threads: HF ``tokenizers`` starts no thread pool of its own.

Each case runs in a fresh Python (the pool, once started, lives as long as the process) and
counts the process's OS threads (``/proc/self/task``) before and after encoding a batch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import json, os, sys
from pipeline.tokenizer import IETokenizer, tokenize_in_calling_threads
tok = IETokenizer.from_file(sys.argv[1])
if sys.argv[2] == "serving":
    tokenize_in_calling_threads()
before = len(os.listdir("/proc/self/task"))
rows = tok.encode_batch(["张伟出生于杭州。"] * 8, ["人物"] * 8)
after = len(os.listdir("/proc/self/task"))
print(json.dumps({"before": before, "after": after, "rows": len(rows)}))
"""

pytestmark = pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")


@pytest.fixture(scope="module")
def vocab(tmp_path_factory) -> Path:
    from pipeline.tokenizer import build_vocab

    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    build_vocab(["张伟出生于杭州。人物"], path)
    return path


def _threads(vocab: Path, mode: str, parallelism: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TOKENIZERS_PARALLELISM"}
    if parallelism is not None:
        env["TOKENIZERS_PARALLELISM"] = parallelism
    env["PYTHONPATH"] = str(ROOT)
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(vocab), mode],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_serving_processes_encode_batches_without_a_thread_pool(vocab):
    serving = _threads(vocab, "serving", None)
    assert serving["rows"] == 8
    assert serving["after"] == serving["before"]


def test_without_it_the_library_starts_its_pool(vocab):
    """What the call prevents (so the test above can fail): the library's default."""
    default = _threads(vocab, "library", None)
    assert default["after"] > default["before"]


def test_an_operator_setting_wins(vocab):
    """``TOKENIZERS_PARALLELISM=true`` in the server's environment keeps the pool."""
    chosen = _threads(vocab, "serving", "true")
    assert chosen["after"] > chosen["before"]
