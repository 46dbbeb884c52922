"""One server for the service tests that need nothing but the shipped config on ONNX Runtime."""

from __future__ import annotations

import pytest

from client.bench.local_server import SERVING_MODEL, run_server


@pytest.fixture(scope="session")
def shared_server(tmp_path_factory):
    """The service on free loopback ports (ONNX Runtime, config.yml as shipped), for the whole run.

    Tests that change the config, count metrics or stop the server start their own.
    """
    if not (SERVING_MODEL / "parity.json").exists():
        pytest.skip("demo models not built: run `python -m conversion.bridge build`")
    with run_server(tmp_path_factory.mktemp("shared"), backend="onnx") as srv:
        srv.kserve_port = srv.config()["ie"]["kserve_http_port"]
        yield srv
