"""config.yml parsing: the shipped file is valid, and each mistake gets a message saying what to fix."""

import re
from pathlib import Path

import pytest
import yaml

from pipeline.config import load_config, models_from_cli
from pipeline.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


@pytest.fixture
def shipped() -> dict:
    return yaml.safe_load((ROOT / "config.yml").read_text(encoding="utf-8"))


def test_shipped_config_is_valid():
    cfg = load_config(ROOT / "config.yml")
    assert cfg.rpc_port == 8088 and cfg.http_port == 18082
    assert set(cfg.ie.models) == {"uie", "spo"}
    assert cfg.ie.models["uie"].dir == (ROOT / "serving_model" / "uie").resolve()
    assert "ie" not in cfg.pipeline
    assert cfg.op_conf("model")["batch_size"] >= 1


def test_override_backend(shipped, tmp_path):
    cfg = load_config(write(tmp_path, shipped), {"backend": "onnx"})
    assert cfg.ie.backend == "onnx"


def test_model_flags_replace_the_configured_models(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(ROOT / "config.yml", {"models": models_from_cli(["kg=models/spo"])})
    assert set(cfg.ie.models) == {"kg"} and cfg.ie.models["kg"].dir == tmp_path / "models" / "spo"


@pytest.mark.parametrize(
    ("values", "needle"), [(["spo"], "NAME=DIR"), (["=d"], "NAME=DIR"), (["a=x", "a=y"], "twice")]
)
def test_bad_model_flags_say_what_to_fix(values, needle):
    with pytest.raises(ConfigError, match=needle):
        models_from_cli(values)


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda c: c.pop("ie"), "add an 'ie:' section"),
        (lambda c: c["ie"].update(backend="tensorrt"), "ie.backend"),
        (lambda c: c["ie"].update(unknown_key=1), "ie.unknown_key"),
        (lambda c: c["ie"]["models"]["uie"].update(position_prob=1.5), "ie.models.uie.position_prob"),
        (lambda c: c["ie"]["models"]["spo"].update(precision="fp16"), "ie.models.spo.precision"),
        (  # Paddle Inference serves the FP32 model only
            lambda c: c["ie"].update(backend="paddle") or c["ie"]["models"]["uie"].update(precision="int8"),
            "ie.models.uie.precision is int8 but ie.backend is paddle",
        ),
        (lambda c: c.update(rpc_port=80), "rpc_port: Input should be greater than or equal to 1024"),
        (lambda c: c["op"].pop("decode"), "op.decode"),
        (  # Paddle Serving's timeout batching without a timeout would wait for full batches
            lambda c: c["ie"].update(batching="timeout") or c["op"]["model"].update(auto_batching_timeout=-1),
            "auto_batching_timeout",
        ),
        (lambda c: c["op"]["tokenize"].update(batch_size=4), "op.tokenize has batch_size > 1"),
        (lambda c: c["op"].update(extra={"concurrency": 1}), "unknown op section 'op.extra'"),
        # Paddle Serving's own keys: typos and wrong types stop start-up with the key and the fix
        (lambda c: c.update(worker_nm=64), "unknown key 'worker_nm' (did you mean 'worker_num'?)"),
        (
            lambda c: c["op"]["model"].update(batch_sise=4),
            "unknown key 'op.model.batch_sise' (did you mean 'batch_size'?)",
        ),
        (
            lambda c: c["dag"].update(is_thread_op="yes please"),
            "dag.is_thread_op: Input should be a valid boolean (got 'yes please')",
        ),
        (lambda c: c["dag"]["tracer"].update(intervl=1), "unknown key 'dag.tracer.intervl'"),
        (lambda c: c.update(build_dag_each_worker=True), "build_dag_each_worker: true is not supported"),
    ],
)
def test_bad_config_says_what_to_fix(shipped, tmp_path, mutate, needle):
    mutate(shipped)
    with pytest.raises(ConfigError, match=re.escape(needle)):
        load_config(write(tmp_path, shipped))


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yml")
    bad = tmp_path / "bad.yml"
    bad.write_text("rpc_port: [", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
