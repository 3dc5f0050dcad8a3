#!/usr/bin/env bash
# The checks a GPU session runs, in one go: the gpu-marked tests (what `nox -s gpu` runs) and the CUDA figures
# the README quotes (torch backend on CUDA: closed-loop latency with CUDA events, LoadGen's server scenario with
# its max-QPS search, a concurrency curve, energy per inference from NVML). Every step has its own time limit
# and its output lands in OUT (default reports/gpu-check), so a slow step costs its own figures only.
#   bash benchmarks/gpu_check.sh [OUT]
set -u
out=${1:-reports/gpu-check}
mkdir -p "$out"
harness() { python3 -c 'import sys; from harness.cli import main; sys.argv[0] = "harness"; main()' "$@"; }
{
    nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,clocks.max.mem,power.limit --format=csv
    python3 -c 'import sys, torch, onnxruntime; print(sys.version.split()[0], "torch", torch.__version__,
                "onnxruntime", onnxruntime.__version__, "cuda", torch.version.cuda)'
} > "$out/env.txt" 2>&1
cat "$out/env.txt"

echo "== gpu-marked tests"
timeout "${GPU_TESTS_S:-240}" python3 -m pytest -m gpu -rs -q -s -p no:cacheprovider 2>&1 | tee "$out/gpu-tests.log"

echo "== torch on CUDA: resnet50 (seeded weights; latency does not depend on them)"
for precision in fp32 fp16; do
    engine=$(timeout 120 harness build-engine --backend torch --model resnet50 --precision "$precision" \
             --max-batch 32 2>>"$out/build.log")
    [ -n "$engine" ] || { echo "build of resnet50 $precision failed (see build.log)"; continue; }
    for batch in 1 32; do
        timeout 60 harness bench "$engine" --batch "$batch" --duration 2 \
            --json "$out/closed-loop-resnet50-$precision-b$batch.json" 2>&1
    done
    if [ "$precision" = fp16 ]; then
        timeout 120 harness bench "$engine" --scenario server --find-max-qps --latency-bound-ms 10 --batch 32 \
            --duration 2 --json "$out/server-resnet50-fp16.json" 2>&1
        timeout 60 harness bench "$engine" --concurrency 1,2,4,8,16,32 --batch 32 --duration 1 \
            --json "$out/concurrency-resnet50-fp16.json" 2>&1
    fi
done | tee "$out/bench.log"
