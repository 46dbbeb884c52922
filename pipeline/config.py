"""``config.yml``: Paddle Serving's own keys plus this project's ``ie:`` section, validated once.

The Paddle Serving keys (``rpc_port``, ``http_port``, ``worker_num``, ``dag``, ``op``) are checked
for the mistakes that would otherwise surface as a hang or a traceback deep in the framework, then
handed to ``PipelineServer`` as they are. The ``ie:`` section is parsed into typed objects.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pipeline.errors import ConfigError

OP_NAMES = ("tokenize", "model", "decode")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSettings(_Strict):
    """One served model (``ie.models.<name>``)."""

    dir: Path = Field(description="serving_model/<name>: serving_server/, model.onnx, vocab.txt")
    max_seq_len: int = Field(default=512, ge=16, le=4096)
    position_prob: float = Field(default=0.5, gt=0.0, lt=1.0, description="UIE span threshold")
    threshold: float = Field(default=0.0, description="SPO logit threshold")
    window_overlap: int | None = Field(default=None, ge=0, description="chars shared by windows")
    anchor_children: bool = Field(
        default=True,
        description="UIE: ask a child prompt of a long text only in windows holding its parent span "
        "(false: every window, as Taskflow does)",
    )
    split_sentence: bool = Field(
        default=False,
        description="UIE: read a text sentence by sentence, so no fact spans two sentences "
        "(Taskflow's split_sentence)",
    )


class Limits(_Strict):
    """Per-request limits (``ie.limits``)."""

    max_texts: int = Field(default=64, ge=1)
    max_text_chars: int = Field(default=20_000, ge=1)
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    max_schema_nodes: int = Field(default=64, ge=1)
    request_timeout_ms: int = Field(default=30_000, ge=100)


class IESettings(_Strict):
    """This project's section of ``config.yml``."""

    backend: Literal["auto", "paddle", "onnx"] = "auto"
    intra_op_threads: int = Field(default=2, ge=1, le=256)
    use_onednn: bool = False
    max_batch_rows: int = Field(default=16, ge=1, le=1024, description="rows per engine call")
    models: dict[Literal["uie", "spo"], ModelSettings]
    limits: Limits = Limits()
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    http_gateway: Literal["auto", "go", "python"] = Field(
        default="auto", description="go: Paddle Serving's x86-64 gateway; auto: go where it runs"
    )
    bind_address: str = Field(
        default="0.0.0.0", description="address of the python HTTP gateway, KServe and metrics servers"
    )
    kserve_http_port: int = Field(
        default=8000, ge=0, le=65535, description="KServe v2 HTTP (health, metadata, infer); 0 = off"
    )
    metrics_port: int = Field(default=8002, ge=0, le=65535, description="Prometheus /metrics; 0 = off")
    log_requests_text: bool = Field(default=False, description="put request texts in the per-request log")
    serving_request_logs: bool = Field(
        default=False, description="keep Paddle Serving's own ~7 lines per request in PipelineServingLogs/"
    )

    @field_validator("models")
    @classmethod
    def _at_least_one(cls, v: dict) -> dict:
        if not v:
            raise ValueError("list at least one model under ie.models (uie and/or spo)")
        return v


class ServiceConfig(BaseModel):
    """The whole file: ``pipeline`` is what PipelineServer gets, ``ie`` our typed settings."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    pipeline: dict[str, Any]
    ie: IESettings
    path: Path

    @property
    def rpc_port(self) -> int | None:
        return self.pipeline.get("rpc_port")

    @property
    def http_port(self) -> int | None:
        return self.pipeline.get("http_port")

    @property
    def is_thread_op(self) -> bool:
        return bool(self.pipeline.get("dag", {}).get("is_thread_op", True))

    def op_conf(self, name: str) -> dict[str, Any]:
        return dict(self.pipeline.get("op", {}).get(name, {}))


def _check_pipeline_keys(raw: dict[str, Any], where: str) -> None:
    for key in ("rpc_port", "http_port"):
        port = raw.get(key)
        if port is not None and (not isinstance(port, int) or not 1024 <= port <= 65535):
            raise ConfigError(f"{where}: {key} must be an integer in 1024-65535, got {port!r}")
    if raw.get("rpc_port") is None:
        raise ConfigError(f"{where}: set rpc_port (the gRPC port, 8088 by default)")
    ops = raw.get("op")
    if not isinstance(ops, dict):
        raise ConfigError(f"{where}: add an 'op:' section with {', '.join(OP_NAMES)}")
    for name in OP_NAMES:
        conf = ops.get(name)
        if not isinstance(conf, dict):
            raise ConfigError(f"{where}: add 'op.{name}:' (at least 'concurrency: 1')")
        for key in ("concurrency", "batch_size"):
            if key in conf and (not isinstance(conf[key], int) or conf[key] < 1):
                raise ConfigError(f"{where}: op.{name}.{key} must be an integer >= 1")
        if conf.get("batch_size", 1) > 1 and conf.get("auto_batching_timeout", -1) <= 0:
            raise ConfigError(
                f"{where}: op.{name} has batch_size > 1 but no auto_batching_timeout (ms); "
                "without it a request waits until the batch is full"
            )
    unknown = set(ops) - set(OP_NAMES)
    if unknown:
        raise ConfigError(f"{where}: unknown op sections {sorted(unknown)}; ops are {OP_NAMES}")


def _format_validation(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in ("ie", *e["loc"]))
        parts.append(f"{loc}: {e['msg']}")
    return "; ".join(parts)


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> ServiceConfig:
    """Read and validate ``config.yml``; ``overrides`` replace keys of the ``ie`` section.

    Relative model dirs are resolved against the config file's folder.
    """
    path = Path(path).resolve()
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise ConfigError(f"config file not found: {path}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    ie_raw = dict(raw.pop("ie", None) or {})
    if not ie_raw:
        raise ConfigError(f"{path}: add an 'ie:' section (backend, models, limits)")
    ie_raw.update(overrides or {})
    _check_pipeline_keys(raw, str(path))
    try:
        ie = IESettings.model_validate(ie_raw)
    except ValidationError as e:
        raise ConfigError(f"{path}: {_format_validation(e)}") from e
    models = {
        name: m.model_copy(update={"dir": (path.parent / m.dir).resolve()}) for name, m in ie.models.items()
    }
    ie = ie.model_copy(update={"models": models})
    return ServiceConfig(pipeline=raw, ie=ie, path=path)
