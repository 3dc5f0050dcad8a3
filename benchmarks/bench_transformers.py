"""INT8 (or FP8) transformers at their native size: vit_b_16, swin_t and convnext_tiny, naive against selective.

Each model is exported the way `harness export --precision int8` does it (calibration, Q/DQ ONNX, the export
check), then the ONNX Runtime run of the file is compared with FP32 PyTorch: SQNR of the logits, top-1
agreement, weighted nodes running in INT8 (their input is quantized) out of all, and `harness inspect`'s verdict.

Weights are torchvision's seeded initialisation with two changes that make the activations realistic: ViT's
head is zero-initialised upstream (every logit 0), so it gets the truncated-normal init Swin's head has; and
ConvNeXt's layer scale starts at 1e-6 (each block adds a millionth of its output to the residual stream, so
its quantization would go unmeasured), so it is set to 0.1. Calibration and evaluation use seeded random images
(`synthetic`, disjoint seeds): on the bundled digits, all dark 8x8 strokes, these random-weight models give
nearly the same logits for every image (top-1 agreement would be trivially 100 %).
`--precision fp8 --calib max` measures FP8 E4M3 the same way (same placement, FP8 Q/DQ).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from harness.data.datasets import resolve_dataset
from harness.export.onnx_export import run_onnx
from harness.export.variants import verify_sidecar
from harness.measure.accuracy import sqnr_db
from harness.models.registry import load_model, resolve_model
from harness.quantize.config import QuantConfig
from harness.quantize.inspect_onnx import check

MODELS = ("vit_b_16", "swin_t", "convnext_tiny")
LAYER_SCALE = 0.1


def realistic_weights(name: str, folder: Path, layer_scale: float = LAYER_SCALE) -> Path:
    """The seeded torchvision weights with the two fixes of the module docstring, as a state_dict file."""
    model = load_model(resolve_model(name))
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(0)
        if name.startswith("vit"):
            nn.init.trunc_normal_(model.heads.head.weight, std=0.02)
        for m in model.modules():
            if hasattr(m, "layer_scale"):
                m.layer_scale.fill_(layer_scale)
    path = folder / f"{name}-{layer_scale:g}.pt"
    torch.save(model.state_dict(), path)
    return path


def export_cli(name: str, weights: Path, cfg: QuantConfig, out: Path) -> list[str]:
    """The `harness export` command line a user would type for this row."""
    cmd = ["harness", "export", "--model", name, "--weights", str(weights), "--precision", cfg.dtype,
           "--mode", cfg.mode, "--dataset", cfg.dataset, "--calib", cfg.calib,
           "--calib-batches", str(cfg.calib_batches), "--calib-batch-size", str(cfg.calib_batch_size), "-o", str(out)]
    return cmd + (["--quantize-attention-matmul"] if cfg.quantize_attention_matmul else [])


def row(spec, cfg: QuantConfig, x: np.ndarray, reference: np.ndarray, folder: Path) -> dict:
    """Export through the CLI (its own export check on 32 images: the file's SQNR and fake-quant's), then score
    the kept file on `x` with the CPU reference (ONNX Runtime, the file as written)."""
    out = folder / f"{spec.name}-{cfg.dtype}-{cfg.mode}-{int(cfg.quantize_attention_matmul)}.onnx"
    cmd = export_cli(spec.name, Path(spec.weights), cfg, out)
    start = time.perf_counter()
    done = subprocess.run([str(Path(sys.executable).with_name("harness")), *cmd[1:]], capture_output=True,
                          text=True, cwd=folder)  # its calibration cache: folder/engines/calib
    seconds = time.perf_counter() - start
    if done.returncode:
        return {"command": " ".join(cmd), "failed": (done.stderr or done.stdout).strip().splitlines()[-1]}
    kept = json.loads(verify_sidecar(out).read_text())
    proto = onnx.load(str(out))
    report = check(proto)
    got = np.concatenate([run_onnx(proto.SerializeToString(), x[i:i + 16]) for i in range(0, len(x), 16)])
    weighted = len(report.weighted_quantized) + len(report.weighted_float)
    matmuls = len(report.matmul_quantized) + len(report.matmul_float)
    return {"command": " ".join(cmd), "file_sqnr": kept["sqnr_db"], "fq_sqnr": kept["fake_quant_sqnr_db"],
            "sqnr": sqnr_db(reference, got), "agree": 100.0 * float(np.mean(got.argmax(1) == reference.argmax(1))),
            "quantized": f"{len(report.weighted_quantized)} / {weighted}",
            "matmul": f"{len(report.matmul_quantized)} / {matmuls}",
            "verdict": "clean" if not report.hazard_count else f"{report.hazard_count} hazards", "seconds": seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--samples", type=int, default=64, help="evaluation images")
    ap.add_argument("--calib-batches", type=int, default=4)
    ap.add_argument("--calib-batch-size", type=int, default=16)
    ap.add_argument("--calib", default=None, help="activation calibrator (default: entropy; FP8: max)")
    ap.add_argument("--precision", choices=["int8", "fp8"], default="int8", help="what the Q/DQ hold")
    ap.add_argument("--layer-scales", nargs="+", type=float, default=[LAYER_SCALE, 1.0],
                    help="ConvNeXt layer scales to measure (torchvision initialises it to 1e-6)")
    args = ap.parse_args()
    args.calib = args.calib or ("max" if args.precision == "fp8" else "entropy")
    kind = args.precision.upper()
    print(f"{kind}; calibration {args.calib_batches} x {args.calib_batch_size} synthetic images, --calib {args.calib}; "
          "export check (harness export's own, 32 images): the file's SQNR against FP32 and fake-quant's; then the "
          f"kept file on {args.samples} evaluation images (ONNX Runtime, as written) against FP32 PyTorch")
    print("| model | mode | export check: file / fake-quant SQNR dB | SQNR dB | top-1 agreement % | "
          f"{kind} weighted nodes / all | attention MatMuls {kind} | inspect --strict | calibration + export s |")
    print("|---|---|---|---|---|---|---|---|---|")
    commands = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        runs = [(name, scale) for name in args.models
                for scale in (args.layer_scales if name.startswith("convnext") else [LAYER_SCALE])]
        for name, scale in runs:
            spec = resolve_model(name, weights=str(realistic_weights(name, folder, scale)))
            x, _ = resolve_dataset("synthetic", spec).take("val", args.samples)
            with torch.no_grad():
                model = load_model(spec)
                reference = np.concatenate([model(torch.from_numpy(x[i:i + 16])).numpy()
                                            for i in range(0, len(x), 16)])
            spread = float(reference.std(0).mean() / reference.std(1).mean())
            label = f"{name} (layer scale {scale:g})" if name.startswith("convnext") else name
            print(f"| {label} | fp32 | | | | | | | (logits: std across images / std across classes {spread:.2f}) |")
            variants = [("naive", {}), ("selective", {})]
            if not name.startswith("convnext"):
                variants.append(("selective", {"quantize_attention_matmul": True}))
            for mode, extra in variants:
                cfg = QuantConfig(mode=mode, calib=args.calib, dataset="synthetic", calib_batches=args.calib_batches,
                                  calib_batch_size=args.calib_batch_size, dtype=args.precision, **extra)
                r = row(spec, cfg, x, reference, folder)
                commands.append(r["command"])
                variant = mode + (" + attention MatMuls" if extra else "")
                if "failed" in r:
                    print(f"| {label} | {variant} | not kept: {r['failed']} | | | | | | |", flush=True)
                    continue
                print(f"| {label} | {variant} | {r['file_sqnr']:.1f} / {r['fq_sqnr']:.1f} | {r['sqnr']:.1f} | "
                      f"{r['agree']:.1f} | {r['quantized']} | {r['matmul']} | {r['verdict']} | {r['seconds']:.0f} |",
                      flush=True)
    print("\ncommands (weights: the seeded torchvision ones with the fixes above, written by this script):")
    for cmd in commands:
        print(f"  {cmd}")


if __name__ == "__main__":
    main()
