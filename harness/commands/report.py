"""harness report: merge sweep results into one report, and `report compare` as a CI regression gate."""

from __future__ import annotations

from pathlib import Path

import click

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
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
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
@click.option("--max-latency-regression", default="5%", show_default=True,
              help="Allowed p50 slowdown; a larger one fails only when it is also significant (p < 0.05).")
@click.option("--max-accuracy-drop", type=click.FloatRange(0), default=0.2, show_default=True,
              help="Allowed top-1 drop in percentage points.")
@click.option("--max-qps-drop", default="5%", show_default=True,
              help="Scenario cells: allowed drop of the server's max QPS (or offline / concurrency throughput).")
@click.option("--max-p99-regression", default=None,
              help="Scenario cells at a fixed load: allowed p99 increase when significant (default: "
                   "--max-latency-regression).")
@click.option("--output", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Also write the comparison of every cell as CSV (ratios, intervals, p-values, verdicts).")
@click.pass_context
def compare(ctx, baseline, current, max_latency_regression, max_accuracy_drop, max_qps_drop, max_p99_regression,
            output):
    """Exit 1 when CURRENT regresses against BASELINE: significantly slower beyond the threshold, less accurate,
    failing now, or missing a cell the baseline had. Scenario cells: a lower max QPS or throughput, a higher p99 at
    the same load, or a server rate no longer VALID."""
    from harness.report.compare import checked_side, parse_percent
    from harness.report.compare import compare as compare_results

    max_pct = parse_percent(max_latency_regression, "--max-latency-regression")
    qps_pct = parse_percent(max_qps_drop, "--max-qps-drop")
    p99_pct = max_pct if max_p99_regression is None else parse_percent(max_p99_regression, "--max-p99-regression")
    base, cur = (checked_side(load_results([side]), side) for side in (baseline, current))
    result = compare_results(base, cur, max_pct, max_accuracy_drop, qps_pct, p99_pct)
    table = result.table
    if output:
        table.to_csv(output, index=False)
        click.echo(f"wrote {output}")
    for _, r in table.iterrows():
        if r["verdict"].startswith("REGRESSION") or r["verdict"] == "new":
            click.echo(f"{r['verdict']}: {_label(r)}{_figures(r)}")
    checked = int(table["status_base"].notna().sum())
    if result.regressions:
        click.echo(f"{result.regressions} regression(s) of {checked} baseline cells (allowed: {max_pct:g} % slower "
                   f"when significant at p < 0.05, {max_accuracy_drop:g} pp top-1)", err=True)
        ctx.exit(1)
    click.echo(f"no regression in {checked} baseline cells")


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
