"""The KServe v2 (Open Inference Protocol) messages of this service, as pure functions.

Models by name (each a ``uie`` or ``spo`` model, its version from its card, ``"1"`` by default).
Inputs: ``text`` BYTES [-1] (one element per text) and,
for ``uie``, ``schema`` BYTES [1] (a Taskflow schema as JSON); optional request parameter
``position_prob`` (uie). Output: ``result`` BYTES [-1], one JSON string per text, the same per-text
JSON (results or error objects) as the Paddle Serving route. Tensor data comes as JSON ``data`` or
with Triton's binary tensor data extension (``Inference-Header-Content-Length``), both ways.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from typing import Any

from pipeline.errors import (
    ERR_INPUT,
    ERR_UNKNOWN,
    ERROR_TYPE_KEY,
    GRPC_CODES,
    IEError,
    InvalidSchema,
    error_from_answer,
)
from pipeline.schemas import loads_json, lone_surrogate

SERVER_NAME = "ie-serving"
SERVER_VERSION = "0.1.0"
MODEL_VERSION = "1"
EXTENSIONS = ["binary_tensor_data", "parameters"]
PLATFORMS = {"onnx": "onnxruntime_onnx", "paddle": "paddle_inference"}
HEADER_LENGTH = "Inference-Header-Content-Length"
RESULT_OUTPUT = "result"


_GRPC_BY_STATUS = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 405: "UNIMPLEMENTED", 413: "RESOURCE_EXHAUSTED"}


class KServeError(IEError):
    """A request the protocol layer refuses, with the HTTP status the protocol gives it."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.http_status = status  # type: ignore[misc]  # per instance: the protocol decides
        self.grpc_status = _GRPC_BY_STATUS.get(status, "INTERNAL")  # type: ignore[misc]
        self.err_no = ERR_INPUT if 400 <= status < 500 else ERR_UNKNOWN  # type: ignore[misc]
        assert self.grpc_status in GRPC_CODES

    @property
    def status(self) -> int:
        return self.http_status

    def body(self) -> dict[str, str]:
        return {"error": self.message}


def model_inputs(task: str) -> list[dict[str, Any]]:
    """The input tensors a model takes."""
    inputs = [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    if task == "uie":
        inputs.append({"name": "schema", "datatype": "BYTES", "shape": [1]})
    return inputs


def server_metadata() -> dict[str, Any]:
    """``GET /v2``."""
    return {"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": EXTENSIONS}


def model_metadata(
    name: str, backend: str, task: str | None = None, version: str = MODEL_VERSION
) -> dict[str, Any]:
    """``GET /v2/models/<name>`` (``task``: the model's task, the name by default)."""
    return {
        "name": name,
        "versions": [version],
        "platform": PLATFORMS.get(backend, backend),
        "inputs": model_inputs(task or name),
        "outputs": [{"name": RESULT_OUTPUT, "datatype": "BYTES", "shape": [-1]}],
    }


def decode_bytes_tensor(raw: bytes) -> list[bytes]:
    """Triton's binary BYTES layout: per element a little-endian uint32 length, then the bytes."""
    out, pos = [], 0
    while pos < len(raw):
        if pos + 4 > len(raw):
            raise KServeError(400, "truncated BYTES tensor (length prefix)")
        (n,) = struct.unpack_from("<I", raw, pos)
        pos += 4
        if pos + n > len(raw):
            raise KServeError(400, "truncated BYTES tensor (element)")
        out.append(raw[pos : pos + n])
        pos += n
    return out


def encode_bytes_tensor(items: list[bytes]) -> bytes:
    """Inverse of :func:`decode_bytes_tensor`."""
    return b"".join(struct.pack("<I", len(b)) + b for b in items)


def _flatten(data: Any) -> list[Any]:
    if isinstance(data, list):
        return [x for item in data for x in _flatten(item)]
    return [data]


def _elements(tensor: dict[str, Any], binary: bytes, offset: int) -> tuple[list[str], int]:
    """The tensor's elements as strings, and the offset after its binary data."""
    name = tensor.get("name")
    if tensor.get("datatype") != "BYTES":
        raise KServeError(400, f"input '{name}' must have datatype BYTES, got {tensor.get('datatype')!r}")
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise KServeError(400, f"input '{name}' needs a shape (a list of non-negative integers)")
    size = (tensor.get("parameters") or {}).get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or size < 0 or offset + size > len(binary):
            raise KServeError(400, f"input '{name}': binary_data_size {size!r} exceeds the body")
        try:
            items = [b.decode("utf-8") for b in decode_bytes_tensor(binary[offset : offset + size])]
        except UnicodeDecodeError as e:
            raise KServeError(400, f"input '{name}': element bytes are not UTF-8 text") from e
        offset += size
    elif "data" in tensor:
        items = _flatten(tensor["data"])
        if not all(isinstance(x, str) for x in items):
            raise KServeError(400, f"input '{name}': BYTES data must be strings")
    else:
        raise KServeError(400, f"input '{name}' has neither 'data' nor binary_data_size")
    if math.prod(shape) != len(items):
        raise KServeError(400, f"input '{name}': shape {shape} does not match {len(items)} elements")
    return items, offset


@dataclass(frozen=True)
class InferCall:
    """A parsed infer request: the pipeline's key/value pairs and how to answer."""

    kv: dict[str, str]
    request_id: str | None
    binary_output: bool

    @property
    def log_id(self) -> int:
        """A numeric request id becomes the pipeline's log id (else 0)."""
        rid = self.request_id or ""
        return int(rid) if rid.isdigit() and len(rid) < 19 else 0


def parse_infer_request(
    body: bytes, header_length: int | None, task: str, max_depth: int = 64, model: str | None = None
) -> InferCall:
    """``POST /v2/models/<model>/infer`` body (a ``task`` model) -> :class:`InferCall`; raises
    KServeError (400) or NestedTooDeeply."""
    if header_length is not None and not 0 <= header_length <= len(body):
        raise KServeError(400, f"{HEADER_LENGTH} {header_length} is outside the body")
    header = body if header_length is None else body[:header_length]
    binary = b"" if header_length is None else body[header_length:]
    try:
        request = loads_json(header.decode("utf-8"), max_depth, "the request")
    except ValueError as e:
        raise KServeError(400, "the request is not valid JSON (UTF-8)") from e
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list):
        raise KServeError(400, "the request must be a JSON object with an 'inputs' list")
    allowed = {i["name"] for i in model_inputs(task)}
    tensors: dict[str, list[str]] = {}
    offset = 0
    for tensor in request["inputs"]:
        if not isinstance(tensor, dict) or tensor.get("name") not in allowed:
            name = tensor.get("name") if isinstance(tensor, dict) else tensor
            raise KServeError(
                400, f"model '{model or task}' has no input {name!r}; inputs: {sorted(allowed)}"
            )
        tensors[tensor["name"]], offset = _elements(tensor, binary, offset)
    if "text" not in tensors:
        raise KServeError(400, "missing input 'text'")
    # ASCII JSON: a lone surrogate in a text travels escaped and is that text's own error
    kv = {"task": task, "text": json.dumps(tensors["text"])}
    if model is not None:
        kv["model"] = model
    if "schema" in tensors:
        if len(tensors["schema"]) != 1:
            raise KServeError(400, "input 'schema' takes exactly one element (the schema as JSON)")
        if lone_surrogate(tensors["schema"][0]) is not None:
            raise InvalidSchema("the schema is not valid Unicode (a lone surrogate)")
        kv["schema"] = tensors["schema"][0]
    params = request.get("parameters") or {}
    if not isinstance(params, dict):
        raise KServeError(400, "'parameters' must be an object")
    if params.get("position_prob") is not None:
        kv["position_prob"] = str(params["position_prob"])
    binary_output = bool(params.get("binary_data_output", False))
    for out in request.get("outputs") or []:
        if not isinstance(out, dict) or out.get("name") != RESULT_OUTPUT:
            raise KServeError(400, f"unknown output {out!r}; the output is '{RESULT_OUTPUT}'")
        binary_output = bool((out.get("parameters") or {}).get("binary_data", binary_output))
    rid = request.get("id")
    if rid is not None and lone_surrogate(str(rid)) is not None:
        raise KServeError(400, "'id' is not valid Unicode (a lone surrogate)")
    return InferCall(kv=kv, request_id=None if rid is None else str(rid), binary_output=binary_output)


def infer_response(
    name: str, call: InferCall, answer: dict[str, Any], version: str = MODEL_VERSION
) -> tuple[bytes, dict[str, str]]:
    """The pipeline's Response (as a dict) -> HTTP body and headers; raises KServeError on errors."""
    err_no = int(answer.get("err_no", 0) or 0)
    values = dict(zip(answer.get("key", []), answer.get("value", []), strict=False))
    if err_no != 0:
        message = answer.get("err_msg") or f"err_no {err_no}"
        raise error_from_answer(err_no, message, values.get(ERROR_TYPE_KEY))
    if RESULT_OUTPUT not in values:
        raise KServeError(500, "the pipeline answered without a result")
    items = json.loads(values[RESULT_OUTPUT])
    data = [json.dumps(item, ensure_ascii=False, separators=(",", ":")) for item in items]
    output: dict[str, Any] = {"name": RESULT_OUTPUT, "datatype": "BYTES", "shape": [len(data)]}
    response: dict[str, Any] = {"model_name": name, "model_version": version, "outputs": [output]}
    if call.request_id is not None:
        response["id"] = call.request_id
    if not call.binary_output:
        output["data"] = data
        return json.dumps(response, ensure_ascii=False).encode("utf-8"), {"Content-Type": "application/json"}
    blob = encode_bytes_tensor([d.encode("utf-8") for d in data])
    output["parameters"] = {"binary_data_size": len(blob)}
    header = json.dumps(response).encode("utf-8")
    headers = {"Content-Type": "application/octet-stream", HEADER_LENGTH: str(len(header))}
    return header + blob, headers
