"""Padding and scatter of the runner, with a real ONNX Runtime model built in the test."""

import numpy as np
import onnx
from onnx import TensorProto, helper

from pipeline.backends.onnx_backend import OnnxBackend
from pipeline.model_card import ModelCard
from pipeline.runner import RunBounds, build_feed, run_jobs
from pipeline.tokenizer import Encoded


def row(ids):
    n = len(ids)
    return Encoded(tuple(ids), (0,) * n, ((0, 0),) * n, 1, n - 1)


def test_build_feed_pads_to_longest():
    feed = build_feed([row([2, 5, 3]), row([2, 5, 6, 7, 3])], ["input_ids", "attention_mask", "position_ids"])
    assert feed["input_ids"].tolist() == [[2, 5, 3, 0, 0], [2, 5, 6, 7, 3]]
    assert feed["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    assert feed["position_ids"][0].tolist() == [0, 1, 2, 3, 4]
    assert all(v.dtype == np.int64 for v in feed.values())


def _scale_model(path):
    """out = float(input_ids) * attention_mask * 2: lets the test see which row went where."""
    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["B", "L"])
    mask = helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["B", "L"])
    out = helper.make_tensor_value_info("score", TensorProto.FLOAT, ["B", "L"])
    two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    nodes = [
        helper.make_node("Mul", ["input_ids", "attention_mask"], ["m"]),
        helper.make_node("Cast", ["m"], ["mf"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["mf", "two"], ["score"]),
    ]
    graph = helper.make_graph(nodes, "scale", [ids, mask], [out], initializer=[two])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)


class EchoJob:
    """Two stages: the second stage's rows depend on what the first returned."""

    def __init__(self, seqs):
        self.stage = 0
        self.seqs = seqs
        self.seen = []

    def next_rows(self):
        rows = []
        if self.stage == 0:
            rows = [row(s) for s in self.seqs]
        elif self.stage == 1:
            v = self.seen[0][0]
            rows = [row([int(v[1] / 2) + 100, 1])]  # built from stage-1 output
        self.rows = [None] * len(rows)
        return rows

    def row_done(self, index, scores):
        self.rows[index] = scores.tolist()

    def stage_done(self):
        self.seen.append(self.rows)
        self.stage += 1

    def result(self):
        return self.seen


def test_run_jobs_batches_across_jobs_and_stages(tmp_path):
    _scale_model(tmp_path / "model.onnx")
    card = ModelCard(
        name="t",
        task="spo",
        max_seq_len=16,
        inputs=["input_ids", "attention_mask"],
        outputs=["score"],
        predicates=[{"name": "p"}],
    )
    backend = OnnxBackend(threads=1)
    backend.load(tmp_path, card)
    jobs = [EchoJob([[2, 7, 3], [2, 9, 9, 9, 3]]), EchoJob([[2, 4, 3]])]
    stats = run_jobs(backend, jobs, card.inputs, card.outputs, max_batch_rows=2)
    assert stats.stages == 2 and stats.batches == [2, 1, 2]
    first = jobs[0].seen[0]
    assert first[0][:3] == [4.0, 14.0, 6.0] and first[1] == [4.0, 18.0, 18.0, 18.0, 6.0]
    assert jobs[1].seen[0][0][:3] == [4.0, 8.0, 6.0]
    assert jobs[0].seen[1][0][:2] == [214.0, 2.0] and jobs[1].seen[1][0][:2] == [208.0, 2.0]


def test_chunks_keep_each_call_within_rows_and_output_bytes():
    bounds = RunBounds(max_batch_rows=4, max_output_bytes=1000, row_output_bytes=lambda n: 10 * n * n)
    lengths = [2, 3, 5, 6, 7, 9, 9, 11, 40]  # ascending, as the runner sorts them
    parts = list(bounds.chunks(lengths))
    assert [i for part in parts for i in part] == list(range(len(lengths)))  # every row once, in order
    for part in parts:
        rows = [lengths[i] for i in part]
        assert len(rows) <= 4
        assert len(rows) == 1 or len(rows) * 10 * max(rows) ** 2 <= 1000
    assert [len(p) for p in parts] == [3, 2, 1, 1, 1, 1]  # a 40-token row alone makes 16,000: it runs alone
    assert [len(p) for p in RunBounds(max_batch_rows=4).chunks(lengths)] == [4, 4, 1]


def test_a_job_over_max_job_rows_is_refused_naming_the_limit_and_the_others_run(tmp_path):
    _scale_model(tmp_path / "model.onnx")
    card = ModelCard(
        name="t", task="spo", max_seq_len=16, inputs=["input_ids", "attention_mask"], outputs=["score"],
        predicates=[{"name": "p"}],
    )  # fmt: skip
    backend = OnnxBackend(threads=1)
    backend.load(tmp_path, card)
    big, small = EchoJob([[2, 7, 3]] * 3), EchoJob([[2, 4, 3]])
    stats = run_jobs(backend, [big, small], card.inputs, card.outputs, bounds=RunBounds(max_job_rows=3))
    assert list(stats.refused) == [0] and "ie.limits.max_rows_per_request" in str(stats.refused[0])
    assert len(big.seen) == 1  # its first stage (3 rows) ran; the second would pass 3
    assert len(small.seen) == 2 and small.seen[1][0][:2] == [208.0, 2.0]
