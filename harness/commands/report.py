"""harness report: merge sweep results into one report, and `report compare` as a CI regression gate."""

from __future__ import annotations

from pathlib import Path

import click

from harness.commands.common import DIR_OUT, FILE_OUT, PERCENT, Number
from harness.report.merge import CLOSED_LOOP, SETTINGS, load_results


class ReportGroup(click.Group):
    """`harness report RESULTS... -o DIR` merges; `harness report compare A B` gates: arguments that are not a
    subcommand name go to `merge`."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["merge", *args]
        return super().parse_args(ctx, args)


@click.group(cls=ReportGroup)
def report():
    """Merge sweep results (harness report RESULTS... -o DIR) or compare two (harness report compare A B)."""


@report.command()
@click.argument("results", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", type=DIR_OUT, required=True,
              help="Folder for report.html (self-contained, interactive), report.md and results.csv/.parquet.")
@click.option("--title", default=None, help="Report title (default: the experiments' names).")
def merge(results, output, title):
    """Merge rows from sweep folders or result tables (shards, runners) into one report."""
    from harness.report.write import write_report

    df = load_results(list(results))
    names = ", ".join(sorted(df["experiment"].dropna().astype(str).unique())) or "sweep"
    written = write_report(df, output, title or f"harness report: {names}")
    ok = int((df["status"] == "ok").sum())
    click.echo(f"merged {len(df)} cells ({ok} ok, {len(df) - ok} failed) from {len(results)} source(s)")
    for path in written.values():
        click.echo(f"wrote {path}")


@report.command()
@click.argument("baseline", type=click.Path(path_type=Path))
@click.argument("current", type=click.Path(path_type=Path))
@click.option("--max-latency-regression", "max_pct", type=Number(0, 1000, hi_open=True, unit="%", suffix="%"),
              default="5%", show_default=True,
              help="Allowed p50 slowdown (5% or 5); a larger one fails only when it is also significant (p < 0.05).")
@click.option("--max-accuracy-drop", type=PERCENT, default=0.2, show_default=True,
              help="Allowed top-1 drop in percentage points (agreement with FP32 where there are no labels).")
@click.option("--max-qps-drop", "qps_pct", type=Number(0, 100, unit="%", suffix="%"), default="5%",
              show_default=True,
              help="Scenario cells: allowed drop of the server's max QPS (or offline / concurrency throughput).")
@click.option("--max-p99-regression", "p99_pct", type=Number(0, 1000, hi_open=True, unit="%", suffix="%"),
              default=None,
              help="Scenario cells at a fixed load: allowed p99 increase when significant (default: "
                   "--max-latency-regression).")
@click.option("--latency-only", is_flag=True,
              help="Gate latency alone: the accuracy criterion is not asked for (sweeps whose cells have no "
                   "accuracy figure, e.g. a degenerate FP32 reference).")
@click.option("--output", type=FILE_OUT, default=None,
              help="Also write the comparison of every cell as CSV (ratios, intervals, p-values, verdicts).")
@click.pass_context
def compare(ctx, baseline, current, max_pct, max_accuracy_drop, qps_pct, p99_pct, latency_only, output):
    """Exit 1 when CURRENT regresses against BASELINE: significantly slower beyond the threshold, less accurate,
    failing now, or missing a cell the baseline had. Scenario cells: a lower max QPS or throughput, a higher p99 at
    the same load, or a server rate no longer VALID. A criterion that cannot be evaluated on a cell (its latency
    or accuracy missing or NaN on either side) fails that cell."""
    from harness.fileio import atomic_write
    from harness.report.compare import checked_side
    from harness.report.compare import compare as compare_results

    if latency_only and ctx.get_parameter_source("max_accuracy_drop") != click.core.ParameterSource.DEFAULT:
        raise click.UsageError("--latency-only leaves accuracy out: drop --max-accuracy-drop")
    base, cur = (checked_side(load_results([side]), side) for side in (baseline, current))
    result = compare_results(base, cur, max_pct, None if latency_only else max_accuracy_drop, qps_pct,
                             max_pct if p99_pct is None else p99_pct)
    table = result.table
    if output:
        atomic_write(output, lambda tmp: table.to_csv(tmp, index=False))
        click.echo(f"wrote {output}")
    for _, r in table.iterrows():
        if r["verdict"].startswith("REGRESSION") or r["verdict"] == "new":
            click.echo(f"{r['verdict']}: {_label(r)}{_figures(r)}")
    checked = int(table["status_base"].notna().sum())
    if result.regressions:
        accuracy = "accuracy not gated" if latency_only else f"{max_accuracy_drop:g} pp top-1"
        click.echo(f"{result.regressions} regression(s) of {checked} baseline cells (allowed: {max_pct:g} % slower "
                   f"when significant at p < 0.05, {accuracy})", err=True)
        ctx.exit(1)
    click.echo(f"no regression in {checked} baseline cells{' (latency only)' if latency_only else ''}")


def _label(r) -> str:
    return " ".join(f"{r[k]}" if k != "batch" else f"b{r[k]}" for k in SETTINGS
                    if r[k] not in (None, "-", CLOSED_LOOP))


def _figures(r) -> str:
    """', 1.21x slower [1.19, 1.23], p = 3e-40' where the cell was tested (scenario cells: their rate and p99)."""
    if r.get("qps_metric") is not None or r.get("p99_ratio") is not None:
        metric, change = r.get("qps_metric"), r.get("qps_change_pct")
        parts = [f"{metric.replace('_', ' ')} " + (f"{change:+.1f} %" if change is not None else "none now")] \
            if metric else []
        if r.get("p99_ratio") is not None:
            interval = (f" [95 % {r['p99_ratio_ci_lo']:.3f}, {r['p99_ratio_ci_hi']:.3f}]"
                        if r.get("p99_ratio_ci_lo") is not None else "")
            parts.append(f"p99 {r['p99_ratio']:.3f}x{interval}")
        return ": " + ", ".join(parts)
    if r["latency_ratio"] is None:
        return ""
    text = f": p50 {r['latency_ratio']:.3f}x"
    if r["ratio_ci_lo"] is not None:
        text += f" [95 % {r['ratio_ci_lo']:.3f}, {r['ratio_ci_hi']:.3f}]"
    if r["p_value"] is not None:
        text += f", p = {r['p_value']:.2g}"
    if r["accuracy_drop_pp"] is not None:
        text += f", top-1 drop {r['accuracy_drop_pp']:+.2f} pp"
    return text
