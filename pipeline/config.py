"""``config.yml``: Paddle Serving's own keys plus this project's ``ie:`` section, validated once.

The Paddle Serving keys (``rpc_port``, ``http_port``, ``worker_num``, ``dag``, ``op``) are checked
for the mistakes that would otherwise surface as a hang or a traceback deep in the framework, then
handed to ``PipelineServer`` as they are. The ``ie:`` section is parsed into typed objects.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.errors import ConfigError

OP_NAMES = ("tokenize", "model", "decode")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


TASKS = ("uie", "spo")
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MODEL_NAME_RULE = "1-64 letters, digits, '_', '.' or '-', starting with a letter or digit"


class ModelSettings(_Strict):
    """One served model (``ie.models.<name>``): where it is and the deployment choices; the model
    card (``<dir>/model_card.json``) says what it is (task, version, labels)."""

    dir: Path = Field(description="serving_model/<name>: serving_server/, model.onnx, vocab.txt")
    task: Literal["uie", "spo"] | None = Field(
        default=None, description="checked against the card; omitted: the key uie/spo, else the card's"
    )
    default: bool = Field(default=False, description="the model of its task a request without 'model' gets")
    intra_op_threads: int | None = Field(default=None, ge=1, le=256, description="None: ie.intra_op_threads")
    engine_instances: int | None = Field(default=None, ge=1, le=64, description="None: ie.engine_instances")
    max_batch_rows: int | None = Field(default=None, ge=1, le=1024, description="None: ie.max_batch_rows")
    max_seq_len: int = Field(default=512, ge=16, le=4096)
    position_prob: float = Field(default=0.5, gt=0.0, lt=1.0, description="UIE span threshold")
    threshold: float = Field(default=0.0, description="SPO logit threshold")
    precision: Literal["fp32", "int8"] = Field(
        default="fp32",
        description="int8: the bridge's quantized ONNX file (model card int8), on ONNX Runtime "
        "whatever ie.backend says; Paddle serves FP32 only",
    )
    # How the model reads texts: facts of the model, in its card (``reading``). Set here only to
    # depart from them on purpose; the service logs a warning when one differs from the card.
    window_overlap: int | None = Field(
        default=None, ge=0, description="shared by neighbouring windows: tokens (UIE), characters (SPO)"
    )
    anchor_children: bool | None = Field(
        default=None,
        description="UIE: ask a child prompt of a long text only in windows holding its parent span "
        "(false: every window, as Taskflow does)",
    )
    split_sentence: bool | None = Field(
        default=None,
        description="UIE: read a text sentence by sentence, so no fact spans two sentences "
        "(Taskflow's split_sentence)",
    )


class Limits(_Strict):
    """Per-request limits (``ie.limits``)."""

    max_texts: int = Field(default=64, ge=1)
    max_text_chars: int = Field(default=20_000, ge=1)
    max_body_bytes: int = Field(
        default=4 * 1024 * 1024,
        ge=1024,
        description="a request's body (HTTP) or message (gRPC: refused with RESOURCE_EXHAUSTED)",
    )
    max_response_bytes: int = Field(
        default=64 * 2**20, ge=2**20, description="gRPC: an answer over it fails with RESOURCE_EXHAUSTED"
    )
    max_schema_nodes: int = Field(default=256, ge=1, description="names in a UIE schema, all levels")
    max_rows_per_request: int = Field(
        default=16_384, ge=1, description="engine rows one request may make (prompts x windows, all stages)"
    )
    max_output_bytes_per_call: int = Field(
        default=512 * 2**20,
        ge=2**20,
        description="engine outputs of one call: rows per call are cut to fit; a model whose one row "
        "at its max_seq_len would not fit is refused at load",
    )
    max_json_depth: int = Field(default=64, ge=2, le=512, description="lists/objects nested in any JSON")
    request_timeout_ms: int = Field(default=30_000, ge=100)
    max_url_bytes: int = Field(default=8192, ge=256, description="HTTP request target (414 over it)")
    max_header_bytes: int = Field(default=16_384, ge=1024, description="HTTP header section (431)")
    read_timeout_ms: int = Field(
        default=10_000, ge=100, description="HTTP: the request head, then its body, must arrive within"
    )
    keepalive_timeout_ms: int = Field(default=5_000, ge=100, description="HTTP: idle connections close")


class IESettings(_Strict):
    """This project's section of ``config.yml``."""

    backend: Literal["auto", "paddle", "onnx"] = "auto"
    intra_op_threads: int = Field(default=2, ge=1, le=256)
    engine_instances: int = Field(
        default=1,
        ge=1,
        le=64,
        description="engine calls of one model at once (Triton's instance count): each takes the "
        "next queued batch when it is free; each call uses intra_op_threads",
    )
    use_onednn: bool = False
    onnx_spin_wait: bool = Field(
        default=False,
        description="ONNX Runtime's engine threads keep spinning after each call, waiting for the "
        "next; off, they stop when a call ends (they spin within a call either way), leaving those "
        "cores to the serving threads between calls",
    )
    max_batch_rows: int = Field(default=16, ge=1, le=1024, description="rows per engine call")
    batching: Literal["adaptive", "timeout"] = Field(
        default="adaptive",
        description="model op: adaptive = run at once when idle, batch what queued meanwhile (up to "
        "op.model.batch_size); timeout = Paddle Serving's op.model.auto_batching_timeout wait",
    )
    models: dict[str, ModelSettings]
    model_control: bool = Field(
        default=False,
        description="POST /v2/repository/models/<name>/load|unload on the KServe port (trusted operators)",
    )
    limits: Limits = Limits()
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    http_gateway: Literal["auto", "go", "python"] = Field(
        default="auto",
        description="python (and auto): in process, on every host; go: Paddle Serving's x86-64 "
        "gateway in a child process, forwarding over loopback gRPC",
    )
    bind_address: str = Field(
        default="0.0.0.0",
        description="address of every port (gRPC, HTTP, KServe, metrics); '::' for IPv4 and IPv6",
    )
    kserve_http_port: int = Field(
        default=8000, ge=0, le=65535, description="KServe v2 HTTP (health, metadata, infer); 0 = off"
    )
    playground: bool = Field(default=True, description="the playground page at / on the KServe port")
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
        bad = [name for name in v if not MODEL_NAME.match(name)]
        if bad:
            raise ValueError(f"model name {bad[0]!r} is not allowed: use {MODEL_NAME_RULE}")
        return v

    def threads_of(self, model: ModelSettings) -> int:
        """Engine threads of ``model``: its own setting, else ``ie.intra_op_threads``."""
        return model.intra_op_threads or self.intra_op_threads

    def instances_of(self, model: ModelSettings) -> int:
        """Engine calls of ``model`` at once: its own setting, else ``ie.engine_instances``."""
        return model.engine_instances or self.engine_instances

    def batch_rows_of(self, model: ModelSettings) -> int:
        """Rows per engine call of ``model``: its own setting, else ``ie.max_batch_rows``."""
        return model.max_batch_rows or self.max_batch_rows

    @model_validator(mode="after")
    def _int8_needs_onnx(self) -> IESettings:
        int8 = [name for name, m in self.models.items() if m.precision == "int8"]
        if int8 and self.backend == "paddle":
            raise ValueError(
                f"ie.models.{int8[0]}.precision is int8 but ie.backend is paddle, which serves FP32 "
                "only; use backend onnx or auto (INT8 models then run on ONNX Runtime)"
            )
        return self


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
    def worker_num(self) -> int:
        return int(self.pipeline.get("worker_num", 1))

    @property
    def is_thread_op(self) -> bool:
        return bool(self.pipeline.get("dag", {}).get("is_thread_op", True))

    def op_conf(self, name: str) -> dict[str, Any]:
        return dict(self.pipeline.get("op", {}).get(name, {}))


class _PaddleStrict(BaseModel):
    """Paddle Serving's own keys: strict types (``"yes"`` is not a bool), no unknown keys."""

    model_config = ConfigDict(extra="forbid", strict=True)


class TracerConf(_PaddleStrict):
    interval_s: int = -1


class DagConf(_PaddleStrict):
    """``dag:`` (Paddle Serving's DAG executor)."""

    is_thread_op: bool = True
    retry: int = Field(default=1, ge=1)
    use_profile: bool = False
    channel_size: int = Field(default=0, ge=0)
    tracer: TracerConf = TracerConf()
    channel_recv_frist_arrive: bool = False  # sic: Paddle Serving's spelling


class OpConf(_PaddleStrict):
    """``op.<name>:`` (one op of the DAG)."""

    concurrency: int = Field(default=1, ge=1)
    batch_size: int = Field(default=1, ge=1)
    auto_batching_timeout: int = -1
    timeout: int = -1
    retry: int = Field(default=1, ge=1)


class PipelineConf(_PaddleStrict):
    """The top level of ``config.yml`` less ``ie:``: what PipelineServer gets."""

    rpc_port: int = Field(ge=1024, le=65535)
    http_port: int | None = Field(default=None, ge=1024, le=65535)
    worker_num: int = Field(default=1, ge=1)
    build_dag_each_worker: Literal[False] = False
    dag: DagConf = DagConf()
    op: dict[Literal["tokenize", "model", "decode"], OpConf]


def _pipeline_error(err: ValidationError, raw: dict[str, Any], where: str) -> ConfigError:
    """One ConfigError naming each bad key of Paddle Serving's section, with the fix."""
    import difflib

    parts = []
    for e in err.errors():
        loc = [str(p) for p in e["loc"]]
        key = ".".join(loc)
        if e["type"] == "extra_forbidden":
            section: Any = PipelineConf
            for part in loc[:-1]:
                section = {"dag": DagConf, "tracer": TracerConf}.get(part, OpConf)
            allowed = sorted(section.model_fields)
            close = difflib.get_close_matches(loc[-1], allowed, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"allowed: {', '.join(allowed)}"
            parts.append(f"unknown key '{key}' ({hint})")
        elif e["type"] == "missing" and loc == ["rpc_port"]:
            parts.append("set rpc_port (the gRPC port, 8088 by default)")
        elif e["type"] == "missing" and loc == ["op"]:
            parts.append(f"add an 'op:' section with {', '.join(OP_NAMES)}")
        elif e["type"] == "literal_error" and loc[:1] == ["op"]:
            parts.append(f"unknown op section 'op.{loc[1]}'; ops are {', '.join(OP_NAMES)}")
        elif loc == ["build_dag_each_worker"]:
            parts.append("build_dag_each_worker: true is not supported; raise worker_num instead")
        else:
            parts.append(f"{key}: {e['msg']} (got {e.get('input')!r})")
    return ConfigError(f"{where}: " + "; ".join(parts))


def _check_pipeline_keys(raw: dict[str, Any], where: str, adaptive: bool) -> None:
    try:
        conf = PipelineConf.model_validate(raw)
    except ValidationError as e:
        raise _pipeline_error(e, raw, where) from e
    for name in OP_NAMES:
        if name not in conf.op:
            raise ConfigError(f"{where}: add 'op.{name}:' (at least 'concurrency: 1')")
        op = conf.op[name]
        batches_adaptively = adaptive and name == "model"
        if op.batch_size > 1 and op.auto_batching_timeout <= 0 and not batches_adaptively:
            raise ConfigError(
                f"{where}: op.{name} has batch_size > 1 but no auto_batching_timeout (ms); "
                "without it a request waits until the batch is full"
            )


def _format_validation(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in ("ie", *e["loc"]))
        parts.append(f"{loc}: {e['msg']}")
    return "; ".join(parts)


def models_from_cli(values: list[str]) -> dict[str, dict[str, str]]:
    """``ie.models`` from ``--model NAME=DIR`` arguments (DIR relative to the working directory)."""
    models: dict[str, dict[str, str]] = {}
    for value in values:
        name, sep, directory = value.partition("=")
        if not sep or not name or not directory:
            raise ConfigError(f"--model {value!r}: expected NAME=DIR, e.g. --model spo=my_models/spo")
        if name in models:
            raise ConfigError(f"--model {name} is given twice")
        models[name] = {"dir": str(Path(directory).resolve())}
    return models


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
    _check_pipeline_keys(raw, str(path), adaptive=ie_raw.get("batching", "adaptive") == "adaptive")
    try:
        ie = IESettings.model_validate(ie_raw)
    except ValidationError as e:
        raise ConfigError(f"{path}: {_format_validation(e)}") from e
    models = {
        name: m.model_copy(update={"dir": (path.parent / m.dir).resolve()}) for name, m in ie.models.items()
    }
    ie = ie.model_copy(update={"models": models})
    return ServiceConfig(pipeline=raw, ie=ie, path=path)
