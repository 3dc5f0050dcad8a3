"""Quickstart sweep: cold time, warm re-run time (target: warm <= 10 % of cold), re-measure time, and where the
cold run's seconds go.

- cold: empty engine cache and no results: every calibration, export, build, timing and evaluation runs.
- warm re-run: the same command again: every cell is finished, so nothing is redone (the resume path).
- re-measure: results deleted, caches kept: calibration, export and builds are cache hits; timing and
  evaluation run again. This is what shared cached work saves when a sweep has to be measured anew.
- breakdown (--breakdown): one more cold run under cProfile, its seconds split by phase (the profiler slows
  Python-heavy parts, so read the shares; the cold row above is the figure).

Each is the wall time of the `harness sweep` command in a fresh process, as a user runs it, with the machine's
1-minute load average before and after: the 30 s cold target is for a quiet 2-core machine.
"""

from __future__ import annotations

import argparse
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SWEEP = "from harness.cli import main; main()"

# phase -> the functions whose cumulative time is that phase's (none of them calls another listed one)
PHASES = {
    "calibration statistics": [("harness/quantize/calibrate.py", "collect_stats")],
    "amax (calibrators)": [("harness/quantize/calibrate.py", "apply_calibration")],
    "sensitivity analysis (hybrid)": [("harness/quantize/sensitivity.py", "analyse")],
    "ONNX export (tracing)": [("harness/export/onnx_export.py", "trace_onnx")],
    "export check": [("harness/export/variants.py", "_verified")],
    "build (copy + session)": [("harness/build.py", "build_artifact")],
    "timing": [("harness/measure/stability.py", "time_until_stable")],
    "evaluation (+ FP32 reference)": [("harness/measure/evaluate.py", "evaluate"),
                                      ("harness/measure/evaluate.py", "reference_outputs")],
    "results tables + report": [("harness/sweep/store.py", "write_tables"), ("harness/report/write.py",
                                                                              "write_report")],
}


def load() -> str:
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "n/a"


def sweep(experiment: Path, work: Path, profile: Path | None = None) -> tuple[float, str]:
    if profile:  # cProfile runs a script file, not -c
        script = work / "harness_main.py"
        script.write_text(SWEEP + "\n")
        prefix = [sys.executable, "-m", "cProfile", "-o", str(profile), str(script)]
    else:
        prefix = [sys.executable, "-c", SWEEP]
    cmd = [*prefix, "sweep", str(experiment), "--engines-dir", str(work / "engines"),
           "--reports-dir", str(work / "reports")]
    before = load()
    start = time.perf_counter()
    subprocess.run(cmd, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start, f"{before} -> {load()}"


def _cumulative(stats: pstats.Stats, path: str, name: str) -> float:
    return sum(row[3] for (file, _, func), row in stats.stats.items() if file.endswith(path) and func == name)


def breakdown(profile: Path, wall: float) -> list[tuple[str, float]]:
    """Seconds per phase from the profile; what is left (imports, start-up, claims, inspection) is 'other'."""
    stats = pstats.Stats(str(profile))
    total = max(row[3] for row in stats.stats.values())
    seconds = {phase: sum(_cumulative(stats, p, f) for p, f in fns) for phase, fns in PHASES.items()}
    rows = [*seconds.items(), ("other (start-up imports, cache keys, placement, inspection)",
                               total - sum(seconds.values()))]
    return [(phase, s * wall / total) for phase, s in rows]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--experiment", type=Path, default=REPO / "experiments" / "quickstart.yaml")
    ap.add_argument("--breakdown", action="store_true", help="also profile a cold run and split it by phase")
    args = ap.parse_args()
    print(f"{os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        cold, cold_load = sweep(args.experiment, work)
        warm, warm_load = sweep(args.experiment, work)
        shutil.rmtree(work / "reports")
        again, again_load = sweep(args.experiment, work)
        print(f"{'quickstart sweep':<28}{'seconds':>9}{'of cold':>9}  load average (1 min) before -> after")
        print(f"{'cold':<28}{cold:>9.1f}{'':>9}  {cold_load}")
        print(f"{'warm re-run (all finished)':<28}{warm:>9.1f}{100 * warm / cold:>8.1f}%  {warm_load}  "
              "(target <= 10 %)")
        print(f"{'re-measure (caches warm)':<28}{again:>9.1f}{100 * again / cold:>8.1f}%  {again_load}")
        if args.breakdown:
            shutil.rmtree(work)
            work.mkdir()
            profile = work / "cold.prof"
            wall, profiled_load = sweep(args.experiment, work, profile)
            print(f"\ncold run under cProfile: {wall:.1f} s, load {profiled_load}; seconds scaled to that wall time")
            for phase, seconds in breakdown(profile, wall):
                print(f"  {phase:<58}{seconds:>7.1f} s {100 * seconds / wall:>5.1f} %")


if __name__ == "__main__":
    main()
