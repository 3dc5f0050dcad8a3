"""harness sweep: run an experiment file's matrix, resumably, into reports/<name>/."""

from __future__ import annotations

from pathlib import Path

import click

from harness.build import ENGINES_DIR
from harness.commands.common import DIR_OUT
from harness.errors import HarnessError


@click.command()
@click.argument("experiment_file", type=click.Path(path_type=Path))
@click.option("--shard", default=None, metavar="K/N|auto",
              help="Run only shard K of N, into REPORTS_DIR/<name>/shard-K-of-N/; auto reads a Slurm job array "
                   "or a Kubernetes Indexed Job (JOB_COMPLETION_INDEX + HARNESS_SHARD_COUNT).")
@click.option("--executor", type=click.Choice(["local", "ray", "slurm"]), default="local", show_default=True,
              help="Where the work groups run: this process, Ray tasks, or a Slurm job array (submitit).")
@click.option("--address", default=None, metavar="auto|ray://HOST:PORT",
              help="The Ray cluster to join (default: start a local one on this machine).")
@click.option("--dry-run", is_flag=True, help="List the cells and the caches they would hit; run nothing.")
@click.option("--retry-failed", is_flag=True, help="Run cells again whose stored row is a failure.")
@click.option("--fail-on-error/--no-fail-on-error", default=True, show_default=True,
              help="Exit 1 when a cell failed (cells whose backend this machine lacks do not count).")
@click.option("--reports-dir", type=DIR_OUT, default=Path("reports"), show_default=True,
              help="Results go to REPORTS_DIR/<experiment name>/.")
@click.option("--engines-dir", type=DIR_OUT, default=ENGINES_DIR, show_default=True,
              help="Artifact cache shared with build-engine.")
@click.option("--threads", default=None, metavar="N|auto",
              help="CPU cells: ONNX Runtime intra-op threads, overriding the experiment's timing.threads (auto: 1 "
                   "below batch 8, else every physical core but one; rows record it as cpu_threads).")
def sweep(experiment_file, shard, executor, address, dry_run, retry_failed, fail_on_error, reports_dir,
          engines_dir, threads):
    """Run every cell of EXPERIMENT_FILE; a finished cell is stored at once, a failing one is stored as a row
    with its error, and a re-run (even after kill -9) skips what is finished."""
    from harness.sweep import shard as sharding
    from harness.sweep.executors import make_executor
    from harness.sweep.experiment import load_experiment
    from harness.sweep.matrix import check_baseline, expand
    from harness.sweep.matrix import shard as shard_cells
    from harness.sweep.store import ResultStore

    if address and executor != "ray":  # checked before anything runs, even on a finished sweep
        make_executor(executor, address)
    exp = load_experiment(experiment_file)
    if threads is not None:
        exp.timing["threads"] = _threads(threads)
    matrix = expand(exp)
    check_baseline(exp, matrix)
    k, n = sharding.resolve(shard) if shard else (1, 1)
    cells = shard_cells(matrix, k, n) if shard else matrix
    store = ResultStore(reports_dir / exp.name / sharding.folder(k, n) if shard else reports_dir / exp.name)
    where = f" (shard {k}/{n}: {len(cells)} of {len(matrix)})" if shard else ""
    click.echo(f"{exp.name}: {len(matrix)} cells{where} -> {store.root}", err=True)
    report = store.root / "report.html"
    if not dry_run and _all_finished(exp, cells, store, retry_failed) and store.report_is_current(report):
        # Nothing to run or render: answer without loading torch, ONNX Runtime or the backends.
        click.echo(f"all {len(cells)} cells finished; {report} is up to date")
        _exit_status(exp, cells, store, fail_on_error)
        return
    from harness.sweep.runner import Workspace, run_sweep

    run_on = make_executor(executor, address)
    ws = Workspace(exp, engines_dir, store, log=lambda m: click.echo(m, err=True))
    if dry_run:
        _print_plan(ws, cells, retry_failed)
        return
    result = run_sweep(ws, cells, matrix, retry_failed, run_on)
    if result.table is None:
        click.echo("no finished cells to report")
        return
    click.echo(f"ran {result.ran} cells ({result.failed} failed), skipped {result.skipped} finished")
    for path in (result.table, result.table.with_suffix(".parquet")):
        click.echo(f"wrote {path}")
    if result.ran == 0 and store.report_is_current(report):
        click.echo(f"{report} is up to date")
    else:
        from harness.report.merge import load_results
        from harness.report.write import write_report

        for path in write_report(load_results([store.root]), store.root, f"harness sweep: {exp.name}",
                                 tables=False).values():
            click.echo(f"wrote {path}")
    _exit_status(exp, cells, store, fail_on_error)


def _threads(value: str) -> int | str:
    if value == "auto":
        return value
    if not value.isdigit() or int(value) < 1:
        raise HarnessError(f"--threads {value!r}: give auto or a number of threads >= 1")
    return int(value)


def _exit_status(exp, cells, store, fail_on_error) -> None:
    """Exit 1 when a cell of this run (this shard) has a failed row; cells whose backend needs an extra this
    machine lacks are named apart and do not count (a GPU matrix on a CPU runner is not a failure)."""
    from harness.sweep.matrix import cell_id

    rows = store.rows()
    mine = [rows[i] for i in (cell_id(exp, c) for c in cells) if i in rows and rows[i].get("status") != "ok"]
    unavailable = [r for r in mine if r.get("missing_extra")]
    if unavailable:
        extras = sorted({r["missing_extra"] for r in unavailable})
        click.echo(f"{len(unavailable)} cell(s) need what this machine lacks (pip install -e "
                   f"'.[{','.join(extras)}]'): not counted as failures", err=True)
    failed = len(mine) - len(unavailable)
    if failed:
        click.echo(f"{failed} of {len(cells)} cell(s) failed (their rows hold the stage and the error; "
                   f"--retry-failed runs them again){': exit 1' if fail_on_error else ''}", err=True)
        if fail_on_error:
            click.get_current_context().exit(1)


def _all_finished(exp, cells, store, retry_failed: bool) -> bool:
    from harness.sweep.matrix import cell_id

    rows = store.rows()
    status = [rows.get(cell_id(exp, c), {}).get("status") for c in cells]
    return all(s == "ok" or (s is not None and not retry_failed) for s in status)


def _print_plan(ws, cells, retry_failed) -> None:
    import pandas as pd

    from harness.report.markdown import md_table
    from harness.sweep.plan import plan

    planned = plan(ws, cells, retry_failed)
    table = pd.DataFrame([{"cell_id": p.cell_id, "cell": p.cell.label(), "result": p.result,
                           "onnx (calibrate+export)": p.onnx, "engine": p.engine} for p in planned])
    click.echo(md_table(table))
    todo = sum(p.result == "to run" for p in planned)
    exports = sum(p.onnx == "miss" for p in planned if p.result == "to run")
    builds = sum(p.engine == "miss" for p in planned if p.result == "to run")
    click.echo(f"{todo} of {len(planned)} cells to run: {exports} calibrate+export(s), {builds} engine build(s)")
