"""Everything that imports or reaches into ``paddle_serving_server``, and nothing else.

- :mod:`~pipeline.paddle_serving.compat`: makes the framework importable on Python 3.11 and holds
  our edge of it (the request op, the guarded servicer, the Go gateway process, PipelineClient);
- :mod:`~pipeline.paddle_serving.server_loop`: the gRPC server loop with the SIGTERM drain;
- :mod:`~pipeline.paddle_serving.watchdog`: dead process-op workers stop the server;
- :mod:`~pipeline.paddle_serving.batching`: the model op's adaptive batching;
- :mod:`~pipeline.paddle_serving.logs`: the framework's per-request log lines, dropped;
- :mod:`~pipeline.paddle_serving.profiler`: the DAG's per-request timestamps, kept per request.

The private attributes these read are listed in :data:`PRIVATE_ATTRIBUTES`;
``tests/unit/test_paddle_serving_private.py`` fails by name if a Paddle Serving release changes them.
"""

# (object, attribute) pairs read by this package, as Paddle Serving 0.9.0 sets them.
PRIVATE_ATTRIBUTES = (
    ("PipelineServer", "_name"),
    ("PipelineServer", "_rpc_port"),
    ("PipelineServer", "_worker_num"),
    ("PipelineServer", "_build_dag_each_worker"),
    ("PipelineServer", "_response_op"),
    ("PipelineServer", "_conf"),
    ("PipelineServicer", "_dag_executor"),
    ("DAGExecutor", "_dag"),
    ("DAGExecutor", "_profiler"),  # replaced by profiler.RequestProfiler
    ("DAG", "_actual_ops"),
    ("DAG", "_threads_or_proces"),
    ("DAG", "_manager"),  # set with process ops only
    ("RequestOp", "unpack_request_package"),  # overridden: the framework must still call it
    ("ResponseOp", "pack_response_package"),  # overridden likewise
    ("Op", "_auto_batching_generator"),  # overridden by batching.AdaptiveBatchingOp
)
