"""Paddle Serving's ``inference_model_to_serving`` layout, written with paddle_serving_server's proto.

paddle_serving_client (which holds the original function) does not install on Python 3.11 and
its ``io`` module needs ``paddle.fluid``, so this module reproduces what it writes
(PaddlePaddle/Serving ``python/paddle_serving_client/io/__init__.py``, ``save_model``):

- ``serving_server/``: the inference model files (copied under the same file names) plus
  ``serving_server_conf.prototxt`` (``GeneralModelConfig`` in protobuf text format) and
  ``serving_server_conf.stream.prototxt`` (the same message, binary serialized);
- ``serving_client/``: ``serving_client_conf.prototxt`` and ``serving_client_conf.stream.prototxt``.

Each ``feed_var``/``fetch_var`` holds the variable ``name`` inside the Paddle model, its
``alias_name`` (the logical name clients use), ``is_lod_tensor`` (false: PIR values carry no LoD),
the type code (int64 0, float32 1, int32 2, float64 3, ...), and ``shape`` built as Serving does:
the non-negative dims only, so a dynamic ``[-1, -1]`` tensor gets an empty shape. Fetch vars are
listed sorted by variable name, as Serving does.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from conversion.parity import Engine
    from conversion.spec import ConversionSpec

from conversion.errors import ConversionError

logger = logging.getLogger(__name__)

SERVER_CONF = "serving_server_conf.prototxt"
SERVER_CONF_STREAM = "serving_server_conf.stream.prototxt"
CLIENT_CONF = "serving_client_conf.prototxt"
CLIENT_CONF_STREAM = "serving_client_conf.stream.prototxt"
X2PADDLE_INPUT_PREFIX = "x2paddle_"

# Paddle Serving's var_type_conversion codes.
TYPE_CODES: dict[str, int] = {
    "int64": 0,
    "float32": 1,
    "int32": 2,
    "float64": 3,
    "int16": 4,
    "float16": 5,
    "bfloat16": 6,
    "uint8": 7,
    "int8": 8,
    "bool": 9,
    "complex64": 10,
    "complex128": 11,
}


class ServingExportError(ConversionError):
    """The inference model cannot be turned into a serving model (missing files, unmatched names)."""


@dataclass(frozen=True)
class VarInfo:
    """One feed or fetch variable of a Paddle inference model."""

    name: str
    dtype: str
    shape: tuple[int, ...]


def find_model_files(model_dir: str | Path) -> tuple[str, str]:
    """The (model, params) file names of the single inference model in ``model_dir``."""
    model_dir = Path(model_dir)
    models = sorted(p.name for p in model_dir.iterdir() if p.suffix in (".json", ".pdmodel"))
    models = [m for m in models if (model_dir / (Path(m).stem + ".pdiparams")).is_file()]
    if len(models) != 1:
        raise ServingExportError(
            f"expected one inference model (+ .pdiparams) in {model_dir}, found {models}"
        )
    return models[0], Path(models[0]).stem + ".pdiparams"


@contextmanager
def _static_mode() -> Iterator[None]:
    import paddle

    was_dynamic = paddle.in_dynamic_mode()
    paddle.enable_static()
    try:
        with paddle.static.scope_guard(paddle.static.Scope()):
            yield
    finally:
        if was_dynamic:
            paddle.disable_static()


def _dtype_name(dtype: object) -> str:
    return str(dtype).removeprefix("paddle.").lower()


def read_model_vars(
    model_dir: str | Path, model_filename: str, params_filename: str
) -> tuple[list[VarInfo], list[VarInfo]]:
    """Feed and fetch variables (in model order) of a Paddle 3 (PIR) inference model."""
    import paddle

    prefix = str(Path(model_dir) / model_filename)
    with _static_mode():
        exe = paddle.static.Executor(paddle.CPUPlace())
        program, feed_names, _ = paddle.static.load_inference_model(
            str(model_dir), exe, model_filename=model_filename, params_filename=params_filename
        )
        feeds: dict[str, VarInfo] = {}
        fetches: list[tuple[int, VarInfo]] = []
        for op in program.global_block().ops:
            if op.name() == "pd_op.data":
                value, name = op.result(0), op.attrs()["name"]
                feeds[name] = VarInfo(name, _dtype_name(value.dtype), tuple(value.shape))
            elif op.name() == "pd_op.fetch":
                value, attrs = op.operand_source(0), op.attrs()
                info = VarInfo(attrs["name"], _dtype_name(value.dtype), tuple(value.shape))
                fetches.append((int(attrs.get("col", len(fetches))), info))
    missing = [n for n in feed_names if n not in feeds]
    if missing or not fetches:
        raise ServingExportError(f"{prefix}: feeds {missing} not found or no fetch op")
    return [feeds[n] for n in feed_names], [info for _, info in sorted(fetches, key=lambda t: t[0])]


# input names older PaddleNLP exports (Taskflow's static UIE of PaddleNLP 2.x) give
FEED_SYNONYMS = {"pos_ids": "position_ids", "att_mask": "attention_mask"}


def match_feed_alias(names: Sequence[str], logical: Sequence[str]) -> dict[str, str]:
    """Variable name -> logical name, matching ``name``, X2Paddle's ``x2paddle_<name>`` or an
    older PaddleNLP name (:data:`FEED_SYNONYMS`)."""
    out: dict[str, str] = {}
    for name in names:
        alias = name.removeprefix(X2PADDLE_INPUT_PREFIX)
        alias = FEED_SYNONYMS.get(alias, alias)
        if alias not in logical:
            raise ServingExportError(f"model input {name!r} matches none of {list(logical)}")
        out[name] = alias
    if sorted(out.values()) != sorted(logical):
        raise ServingExportError(f"model inputs {list(names)} do not cover {list(logical)}")
    return out


def positional_fetch_alias(names: Sequence[str], logical: Sequence[str]) -> dict[str, str]:
    """Variable name -> logical name by output position (``fetch_name_<i>`` is output ``i``)."""
    if len(names) != len(logical):
        raise ServingExportError(f"model has outputs {list(names)}, expected {len(logical)}: {list(logical)}")
    return dict(zip(names, logical, strict=True))


def build_config(
    feeds: Sequence[VarInfo],
    fetches: Sequence[VarInfo],
    feed_alias: dict[str, str] | None = None,
    fetch_alias: dict[str, str] | None = None,
) -> object:
    """The ``GeneralModelConfig`` message Serving's ``save_model`` builds for these variables."""
    from paddle_serving_server.proto import general_model_config_pb2 as pb

    feed_alias, fetch_alias = feed_alias or {}, fetch_alias or {}
    config = pb.GeneralModelConfig()
    for var in feeds:
        feed = config.feed_var.add()
        feed.name, feed.alias_name = var.name, feed_alias.get(var.name, var.name)
        feed.is_lod_tensor = False
        feed.feed_type = TYPE_CODES.get(var.dtype, -1)
        feed.shape.extend(d for d in var.shape if d >= 0)
    for var in sorted(fetches, key=lambda v: v.name):
        fetch = config.fetch_var.add()
        fetch.name, fetch.alias_name = var.name, fetch_alias.get(var.name, var.name)
        fetch.is_lod_tensor = False
        fetch.fetch_type = TYPE_CODES.get(var.dtype, -1)
        fetch.shape.extend(d for d in var.shape if d >= 0)
    return config


def inference_model_to_serving(
    model_dir: str | Path,
    serving_server: str | Path = "serving_server",
    serving_client: str | Path = "serving_client",
    model_filename: str | None = None,
    params_filename: str | None = None,
    feed_alias: dict[str, str] | None = None,
    fetch_alias: dict[str, str] | None = None,
) -> None:
    """Write the Paddle Serving model folders for the inference model in ``model_dir``.

    ``feed_alias`` / ``fetch_alias`` map variable names inside the model to the alias (logical)
    names; unmapped variables keep their own name as alias, as in Serving.
    """
    model_dir, server, client = Path(model_dir), Path(serving_server), Path(serving_client)
    if model_filename is None or params_filename is None:
        found = find_model_files(model_dir)
        model_filename, params_filename = model_filename or found[0], params_filename or found[1]
    feeds, fetches = read_model_vars(model_dir, model_filename, params_filename)
    for alias_map, kind, names in (
        (feed_alias, "feed", {v.name for v in feeds}),
        (fetch_alias, "fetch", {v.name for v in fetches}),
    ):
        unknown = sorted(set(alias_map or {}) - names)
        if unknown:
            raise ServingExportError(
                f"{kind} alias for unknown variables {unknown}; model has {sorted(names)}"
            )
    config = build_config(feeds, fetches, feed_alias, fetch_alias)
    server.mkdir(parents=True, exist_ok=True)
    client.mkdir(parents=True, exist_ok=True)
    for fname in (model_filename, params_filename):
        if (model_dir / fname).resolve() != (server / fname).resolve():
            shutil.copyfile(model_dir / fname, server / fname)
    text, blob = str(config), config.SerializeToString()
    (client / CLIENT_CONF).write_text(text, encoding="utf-8")
    (server / SERVER_CONF).write_text(text, encoding="utf-8")
    (client / CLIENT_CONF_STREAM).write_bytes(blob)
    (server / SERVER_CONF_STREAM).write_bytes(blob)
    logger.info(
        "serving model %s: feeds %s, fetches %s",
        server,
        [(v.name, v.alias_name) for v in config.feed_var],
        [(v.name, v.alias_name) for v in config.fetch_var],
    )


def load_serving_config(path: str | Path) -> object:
    """Parse a ``*_conf.prototxt`` (text) or ``*.stream.prototxt`` (binary) into GeneralModelConfig."""
    from google.protobuf import text_format
    from paddle_serving_server.proto import general_model_config_pb2 as pb

    path = Path(path)
    if path.is_dir():
        path = path / SERVER_CONF
    config = pb.GeneralModelConfig()
    if path.name.endswith(".stream.prototxt"):
        config.ParseFromString(path.read_bytes())
    else:
        text_format.Parse(path.read_text(encoding="utf-8"), config)
    return config


def read_serving_conf(path: str | Path) -> tuple[dict[str, str], dict[str, str]]:
    """(feeds, fetches): alias name -> variable name, from a serving conf file or serving_server
    dir, read as the service reads it (``pipeline.serving_conf``)."""
    from pipeline.serving_conf import read_serving_conf as service_reader

    path = Path(path)
    names = service_reader(path if path.is_dir() else path.parent)
    return names.feeds, names.fetches


def model_dir_engine(
    model_dir: str | Path, model_filename: str, params_filename: str, spec: ConversionSpec
) -> Engine:
    """Paddle Inference over a model's own variable names (inputs by name, outputs by position)."""
    from conversion.parity import paddle_engine

    model_dir = Path(model_dir)
    feeds, fetches = read_model_vars(model_dir, model_filename, params_filename)
    feed_map = {alias: name for name, alias in match_feed_alias([v.name for v in feeds], spec.inputs).items()}
    fetch_map = {
        alias: name for name, alias in positional_fetch_alias([v.name for v in fetches], spec.outputs).items()
    }
    return paddle_engine(model_dir / model_filename, model_dir / params_filename, feed_map, fetch_map)


def serving_dir_engine(
    serving_server: str | Path, model_filename: str, params_filename: str, use_onednn: bool = False
) -> Engine:
    """Paddle Inference over a serving_server dir, mapped through its prototxt alias names."""
    from conversion.parity import paddle_engine

    serving_server = Path(serving_server)
    feeds, fetches = read_serving_conf(serving_server / SERVER_CONF)
    return paddle_engine(
        serving_server / model_filename,
        serving_server / params_filename,
        feeds,
        fetches,
        use_onednn=use_onednn,
    )
