"""INT8 export of deep CNNs at 224x224 with realistic activations: what the export check measures and decides.

Each model gets seeded weights with BatchNorm statistics recomputed on seeded inputs (harness.models.batchnorm),
is calibrated on digits images (entropy) and exported with the strict check. Printed per export: whether the
file was kept, SQNR against FP32 of the file (ONNX Runtime) and of PyTorch fake-quant, the file against
fake-quant, top-1 agreements, McNemar p, and what the old check (max abs error <= 5 % of the output range on 2
synthetic inputs) would have said.

    python benchmarks/bench_export_check.py [--models resnet50 mobilenet_v2] [--modes naive selective]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from harness.data.datasets import SyntheticDataset
from harness.errors import HarnessError
from harness.export.onnx_export import run_onnx
from harness.export.variants import export_variant, verify_sidecar
from harness.models.batchnorm import recompute_batchnorm
from harness.models.registry import load_model, resolve_model
from harness.quantize.checkpoint import quantized
from harness.quantize.config import QuantConfig
from harness.quantize.modules import run_recording_quantizers

MODELS = ["resnet18", "resnet50", "mobilenet_v2", "googlenet", "efficientnet_b0", "regnet_x_400mf"]


def _model_name(name: str) -> str:
    """torchvision models by name, through the factory form for those older harness versions do not list."""
    try:
        resolve_model(name)
        return name
    except HarnessError:
        return f"torchvision.models:{name}"


def old_check_passes(onnx_path: Path, spec, quant: dict, calib_dir: Path) -> bool:
    """The check this benchmark replaces: 2 synthetic inputs, max abs error <= 5 % of the output range + 1e-3."""
    x, _ = SyntheticDataset(spec).take("val", 2)
    expected, _ = run_recording_quantizers(quantized(spec, quant, calib_dir).model, x, 0)
    error = float(np.abs(run_onnx(onnx_path, x) - expected).max())
    return error <= 0.05 * float(np.abs(expected).max()) + 1e-3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--modes", nargs="+", default=["naive", "selective"])
    args = parser.parse_args()
    print("| model | mode | kept | SQNR file dB | SQNR fake-quant dB | file vs fake-quant dB | top-1 agr. file % "
          "| top-1 agr. fake-quant % | McNemar p | Q/DQ placed | old check | s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name in args.models:
            model_name = _model_name(name)
            weights = root / f"{name}.pt"
            torch.save(recompute_batchnorm(load_model(resolve_model(model_name)), (3, 224, 224)).state_dict(), weights)
            spec = resolve_model(model_name, str(weights))
            for mode in args.modes:
                quant = QuantConfig(mode=mode, calib="entropy", calib_batches=2, calib_batch_size=16).to_dict()
                out = root / "onnx" / f"{name}-{mode}.onnx"
                start = time.perf_counter()
                try:
                    export_variant(spec, "int8", out, quant, calib_dir=root / "calib")
                except HarnessError as exc:
                    print(f"| {name} | {mode} | no: {exc.message} |")
                    continue
                seconds = time.perf_counter() - start
                v = json.loads(verify_sidecar(out).read_text())
                old = "keeps" if old_check_passes(out, spec, quant, root / "calib") else "refuses"
                print(f"| {name} | {mode} | yes | {v['sqnr_db']:.2f} | {v['fake_quant_sqnr_db']:.2f} | "
                      f"{v['file_vs_fake_quant_sqnr_db']:.2f} | {v['top1_agreement_pct']:.1f} | "
                      f"{v['fake_quant_top1_agreement_pct']:.1f} | {v['mcnemar_p']:.2f} | {v['quantizers_checked']} | "
                      f"{old} | {seconds:.0f} |", flush=True)


if __name__ == "__main__":
    main()
