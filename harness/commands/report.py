"""harness report: merge sweep results into one report, and `report compare` as a CI regression gate."""

from __future__ import annotations

from pathlib import Path

import click

from harness.report.merge import SETTINGS, load_results


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
@click.option("--output", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Also write the comparison of every cell as CSV (ratios, intervals, p-values, verdicts).")
@click.pass_context
def compare(ctx, baseline, current, max_latency_regression, max_accuracy_drop, output):
    """Exit 1 when CURRENT regresses against BASELINE: significantly slower beyond the threshold, less accurate,
    failing now, or missing a cell the baseline had."""
    from harness.report.compare import checked_side, parse_percent
    from harness.report.compare import compare as compare_results

    max_pct = parse_percent(max_latency_regression, "--max-latency-regression")
    base, cur = (checked_side(load_results([side]), side) for side in (baseline, current))
    result = compare_results(base, cur, max_pct, max_accuracy_drop)
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
    return " ".join(f"{r[k]}" if k != "batch" else f"b{r[k]}" for k in SETTINGS if r[k] not in (None, "-"))


def _figures(r) -> str:
    """', 1.21x slower [1.19, 1.23], p = 3e-40' where the cell was tested."""
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
