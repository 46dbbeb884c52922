"""The private parts of Paddle Serving that pipeline/paddle_serving/ relies on still exist.

A new Paddle Serving release that renames one fails here, naming it, instead of deep in a
server start-up.
"""

from __future__ import annotations

import inspect

import pytest

from pipeline.paddle_serving import PRIVATE_ATTRIBUTES
from pipeline.paddle_serving.batching import AdaptiveBatchingOp
from pipeline.paddle_serving.compat import Op, PipelineServer, RequestOp, ResponseOp


def _classes() -> dict[str, type]:
    from paddle_serving_server.pipeline import dag, pipeline_server

    return {
        "PipelineServer": PipelineServer,
        "PipelineServicer": pipeline_server.PipelineServicer,
        "DAGExecutor": dag.DAGExecutor,
        "DAG": dag.DAG,
        "RequestOp": RequestOp,
        "ResponseOp": ResponseOp,
        "Op": Op,
    }


def _assigned_or_defined(cls: type, attribute: str) -> bool:
    """Whether ``cls`` defines ``attribute`` or one of its methods assigns ``self.<attribute>``."""
    if hasattr(cls, attribute):
        return True
    return f"self.{attribute} =" in inspect.getsource(cls)


@pytest.mark.parametrize(("owner", "attribute"), PRIVATE_ATTRIBUTES)
def test_private_attribute_is_still_there(owner, attribute):
    cls = _classes()[owner]
    assert _assigned_or_defined(cls, attribute), (
        f"paddle_serving_server's {owner} no longer has {attribute}: "
        "update pipeline/paddle_serving/ for this release"
    )


def test_a_prepared_server_has_the_settings_the_loop_reads():
    server = PipelineServer("ie")
    conf = {"rpc_port": 9999, "worker_num": 2, "dag": {"is_thread_op": True}, "op": {}}
    server.set_response_op(ResponseOp(input_ops=[RequestOp()]))
    server.prepare_server(yml_dict=conf)
    for _, attribute in (p for p in PRIVATE_ATTRIBUTES if p[0] == "PipelineServer"):
        assert hasattr(server, attribute), attribute
    assert (server._rpc_port, server._worker_num, server._build_dag_each_worker) == (9999, 2, False)


def test_the_batching_override_takes_what_the_stock_op_passes():
    stock = inspect.signature(Op._auto_batching_generator).parameters
    ours = inspect.signature(AdaptiveBatchingOp._auto_batching_generator).parameters
    assert list(ours) == list(stock)
    assert "self._auto_batching_generator(" in inspect.getsource(Op._run)
