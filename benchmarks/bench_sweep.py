"""Quickstart sweep: cold time, warm re-run time (target: warm <= 10 % of cold), and re-measure time.

- cold: empty engine cache and no results: every calibration, export, build, timing and evaluation runs.
- warm re-run: the same command again: every cell is finished, so nothing is redone (the resume path).
- re-measure: results deleted, caches kept: calibration, export and builds are cache hits; timing and
  evaluation run again. This is what shared cached work saves when a sweep has to be measured anew.

Each is the wall time of the `harness sweep` command in a fresh process, as a user runs it.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def sweep(experiment: Path, work: Path) -> float:
    cmd = [sys.executable, "-c", "from harness.cli import main; main()", "sweep", str(experiment),
           "--engines-dir", str(work / "engines"), "--reports-dir", str(work / "reports")]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--experiment", type=Path, default=REPO / "experiments" / "quickstart.yaml")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        cold = sweep(args.experiment, work)
        warm = sweep(args.experiment, work)
        shutil.rmtree(work / "reports")
        again = sweep(args.experiment, work)
    print(f"{'quickstart sweep':<28}{'seconds':>9}{'of cold':>9}")
    print(f"{'cold':<28}{cold:>9.1f}{'':>9}")
    print(f"{'warm re-run (all finished)':<28}{warm:>9.1f}{100 * warm / cold:>8.1f}%  (target <= 10 %)")
    print(f"{'re-measure (caches warm)':<28}{again:>9.1f}{100 * again / cold:>8.1f}%")


if __name__ == "__main__":
    main()
