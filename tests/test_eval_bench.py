import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

from harness.data.datasets import resolve_dataset
from harness.measure.accuracy import sqnr_db, topk_accuracy
from harness.models.registry import load_model, resolve_model


def test_eval_matches_a_direct_computation(run_cli, digits_engine, tmp_path):
    result = run_cli("eval", digits_engine.artifact, "--dataset", "digits", "--json", tmp_path / "e.json")
    assert result.exit_code == 0, result.output
    got = json.loads((tmp_path / "e.json").read_text())
    spec = resolve_model("digits-resnet")
    x, y = resolve_dataset("digits", spec).take("val", 10_000)
    sess = ort.InferenceSession(digits_engine.artifact, providers=["CPUExecutionProvider"])
    logits = sess.run(None, {"input": x})[0]
    with torch.no_grad():
        ref = load_model(spec)(torch.from_numpy(x)).numpy()
    assert got["samples"] == len(y) == 400
    assert got["top1"] == pytest.approx(100 * np.mean(logits.argmax(1) == y))
    assert got["top1"] >= 99.0  # the bundled weights' documented accuracy
    assert got["top5"] == pytest.approx(100 * np.mean((np.argsort(-logits, 1)[:, :5] == y[:, None]).any(1)))
    assert got["top1_agreement"] == 100.0
    assert got["sqnr_db"] == pytest.approx(sqnr_db(ref, logits), rel=1e-3) and got["sqnr_db"] > 80


def test_accuracy_metrics_on_known_values():
    logits = np.array([[0.1, 0.9, 0.0], [0.8, 0.05, 0.15]], np.float32)
    assert topk_accuracy(logits, np.array([1, 2]), 1) == 50.0
    assert topk_accuracy(logits, np.array([1, 2]), 2) == 100.0
    ref = np.ones((4, 4))
    assert sqnr_db(ref, ref * 1.1) == pytest.approx(20.0)  # noise is 10 % of the signal amplitude
    assert sqnr_db(ref, ref) == float("inf")


def test_bench_reports_ordered_percentiles_and_consistent_throughput(run_cli, digits_engine, tmp_path):
    out = tmp_path / "b.json"
    result = run_cli("bench", digits_engine.artifact, "--batch", 4, "--iterations", 50, "--duration", 0.1,
                     "--warmup", 0.05, "--json", out)
    assert result.exit_code == 0, result.output
    b = json.loads(out.read_text())
    assert b["shape"] == [4, 1, 32, 32] and b["iterations"] >= 50
    order = [b[f"latency_{k}_ms"] for k in ("min", "p50", "p90", "p99", "max")]
    assert order == sorted(order) and order[0] > 0
    assert b["throughput_ips"] == pytest.approx(4 * b["iterations"] / b["wall_s"])
    assert "latency_p50_ms" in result.output and "session.run" in result.output


def test_synthetic_eval_marks_accuracy_not_applicable(run_cli, digits_engine, tmp_path):
    result = run_cli("eval", digits_engine.artifact, "--dataset", "synthetic", "--json", tmp_path / "s.json")
    got = json.loads((tmp_path / "s.json").read_text())
    assert result.exit_code == 0 and "not applicable" in result.output
    assert got["top1"] is None and got["top1_agreement"] == 100.0
