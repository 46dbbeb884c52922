"""README's examples, sent to the demo models on a live server: the answers are the ones README
shows (probabilities and scores within 0.05, as README rounds them)."""

from __future__ import annotations

import json
import re
import urllib.request

import numpy as np
import pytest

from client import rpc_client
from client.bench.local_server import ROOT, SERVING_MODEL

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (SERVING_MODEL / "parity.json").exists(), reason="demo models not built"),
]

README = (ROOT / "README.md").read_text(encoding="utf-8")
TOLERANCE = 0.05


def curl_bodies() -> list[dict]:
    """The JSON bodies of README's ``curl ... -d '...'`` commands, in order."""
    return [
        json.loads(m)
        for m in re.findall(r"curl -s http://127\.0\.0\.1:18082/ie/prediction -d '(.+?)'", README)
    ]


def documented() -> dict[str, list]:
    """README's answers: the JSON block after each ``<!-- readme-example: NAME -->``."""
    found = re.findall(r"<!-- readme-example: (\w+) -->\n```json\n(.+?)\n```", README, flags=re.S)
    return {name: json.loads(block) for name, block in found}


def assert_like(got, want, where: str = "") -> None:
    """Equal, but for floats: within TOLERANCE."""
    if isinstance(want, float):
        assert isinstance(got, float) and abs(got - want) <= TOLERANCE, (where, got, want)
    elif isinstance(want, dict):
        assert isinstance(got, dict) and set(got) == set(want), (where, got, want)
        for key in want:
            assert_like(got[key], want[key], f"{where}.{key}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), (where, got, want)
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_like(g, w, f"{where}[{i}]")
    else:
        assert got == want, (where, got, want)


def test_readme_has_the_examples_this_test_reads():
    assert [b["value"][0] for b in curl_bodies()] == ["uie", "spo"]
    assert set(documented()) == {"uie", "spo"}
    assert_like({"p": 0.97}, {"p": 0.99})
    with pytest.raises(AssertionError):
        assert_like({"p": 0.9}, {"p": 0.99})


@pytest.fixture(scope="module")
def server(shared_server):
    return shared_server


def test_curl_examples_answer_as_readme_shows(server):
    answers = documented()
    for body in curl_bodies():
        request = urllib.request.Request(server.http_url, data=json.dumps(body).encode())
        with urllib.request.urlopen(request, timeout=30) as resp:
            answer = json.loads(resp.read())
        assert answer["err_no"] == 0 and answer["key"] == ["result"]
        assert_like(json.loads(answer["value"][0]), answers[body["value"][0]], body["value"][0])


def test_python_and_triton_examples_answer_the_same(server):
    import tritonclient.http as triton

    spo_text = json.loads(curl_bodies()[1]["value"][1])[0]
    [spo] = rpc_client.predict("spo", [spo_text], endpoint=server.rpc_endpoint)
    assert_like([spo], documented()["spo"][:1])
    client = triton.InferenceServerClient(f"127.0.0.1:{server.config()['ie']['kserve_http_port']}")
    text = triton.InferInput("text", [1], "BYTES")
    text.set_data_from_numpy(np.array([spo_text.encode()], dtype=object))
    [raw] = client.infer("spo", [text]).as_numpy("result")
    assert_like([json.loads(raw)], documented()["spo"][:1])
