"""harness's placement (pytorch-quantization) and NVIDIA Model Optimizer's ONNX PTQ side by side on digits-resnet.

Both tools get the same fp32 ONNX and the same calibration images (the whole 200-image calib split, 4 x 50), and
their INT8 files are scored alike: top-1 and agreement with FP32 PyTorch on the 400 validation images, SQNR of
the logits, `harness inspect`'s verdict, and ONNX Runtime CPU latency at batch 1 and 32 (median over rounds of
per-round p50s; rounds alternate between the files so machine drift hits all of them). Needs the `modelopt`
extra for its rows; without it they print the reason.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import numpy as np

from harness.backends.base import BuildOptions
from harness.build import build_artifact, load_engine
from harness.data.datasets import SyntheticDataset, resolve_dataset
from harness.errors import HarnessError
from harness.measure.evaluate import evaluate
from harness.models.registry import resolve_model
from harness.quantize.config import QuantConfig
from harness.quantize.inspect_onnx import inspect_file

REQUESTS = [("pq", "naive", "max"), ("pq", "naive", "entropy"), ("pq", "selective", "max"),
            ("pq", "selective", "entropy"), ("modelopt", None, "max"), ("modelopt", None, "entropy")]
BATCHES = (1, 32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--iterations", type=int, default=200, help="timed runs per round at batch 1 (batch 32: / 8)")
    args = ap.parse_args()
    spec = resolve_model("digits-resnet")
    data = resolve_dataset("digits", spec)
    rows, runners = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for tool, mode, calib in [(None, None, None), *REQUESTS]:
            quant = None if tool is None else QuantConfig(tool=tool, mode=mode, calib=calib, calib_batches=4,
                                                          calib_batch_size=50).to_dict()
            row = {"precision": "int8" if tool else "fp32", "tool": tool or "", "mode": mode or "",
                   "calibrator": calib or ""}
            try:
                meta, _ = build_artifact(spec, "cpu", BuildOptions(precision=row["precision"], batch_max=64),
                                         Path(tmp), quant)
            except HarnessError as exc:
                rows.append({**row, "error": exc.message})
                continue
            _, runner = load_engine(Path(meta.artifact))
            acc = evaluate(runner, data, "val", (1, 64))
            row.update(top1=acc.top1, agreement=acc.top1_agreement, sqnr=acc.sqnr_db)
            if tool:
                report = inspect_file(Path(meta.onnx_path))
                row.update(hazards=report.hazard_count, float_layers=", ".join(report.weighted_float) or "none")
            runners[len(rows)] = runner
            rows.append(row)
        for batch in BATCHES:
            x = np.resize(SyntheticDataset(spec).take("val", 1)[0], (batch, *spec.input_shape)).astype(np.float32)
            iterations = args.iterations if batch == 1 else max(10, args.iterations // 8)
            p50s = {i: [] for i in runners}
            for _ in range(args.rounds):
                for i, runner in runners.items():
                    p50s[i].append(float(np.percentile(runner.time(x, 0.05, iterations, 0.0).latency_ms, 50)))
            for i, values in p50s.items():
                rows[i][f"b{batch}"] = statistics.median(values)
    print("| precision | tool | mode | calibrator | top-1 % | agreement % | SQNR dB | inspect hazards | weighted "
          "layers in float | p50 ms b1 | p50 ms b32 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['precision']} | {r['tool']} | | {r['calibrator']} | {r['error']} | | | | | | |")
            continue
        print(f"| {r['precision']} | {r['tool']} | {r['mode']} | {r['calibrator']} | {r['top1']:.2f} | "
              f"{r['agreement']:.1f} | {r['sqnr']:.1f} | {r.get('hazards', '')} | {r.get('float_layers', '')} | "
              f"{r['b1']:.3f} | {r['b32']:.2f} |")


if __name__ == "__main__":
    main()
