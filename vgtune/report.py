"""Build `reports/<experiment>/` from a sweep's MLflow runs.

Files: trials.csv, ranking.csv (effect per mitigation and depth, with rank),
mitigations.csv (one row per mitigation), main_effects.csv, best_per_depth.csv,
depth_trends.csv, report.md, a self-contained report.html (plots embedded) and
the PNG plots. The folder is also logged under `report/` on the newest parent
run of the experiment.
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path

import pandas as pd

from vgtune import phase, plots, ranking
from vgtune.config import CONTRACT_FACTORS, FACTORS, RESULTS, THEORY
from vgtune.gradflow import Thresholds
from vgtune.runs import last_experiment, latest_sweep_run, load_trials  # noqa: F401  (last_experiment: the CLI's)
from vgtune.store import client_for

METHOD = " ".join(ranking.__doc__.split("\n\n")[1].split())  # how effects are computed, for the reader
PLOTS = ("accuracy_heatmap.png", "attenuation_vs_depth.png", "layer_profiles.png", "diagnoses.png")
THEORY_PLOTS = ("theory_vs_measured.png", "phase_accuracy.png")  # where the sweep has plain configurations


def _fmt(value) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.3g}"
    return str(value)


def markdown_table(df: pd.DataFrame, max_rows: int = 30) -> str:
    if df.empty:
        return "_(none)_\n"
    head = df.head(max_rows)
    lines = ["| " + " | ".join(map(str, head.columns)) + " |", "|" + "---|" * len(head.columns)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in head.itertuples(index=False)]
    if len(df) > max_rows:
        lines.append(f"\n_{len(df) - max_rows} more rows in the CSV._")
    return "\n".join(lines) + "\n"


def trials_table(df: pd.DataFrame) -> pd.DataFrame:
    """Contract factors, results, every other training option, the sweep folder (no per-block columns)."""
    cols = list(CONTRACT_FACTORS + RESULTS + THEORY) + [f for f in FACTORS if f not in CONTRACT_FACTORS] + ["sweep"]
    return df.reindex(columns=cols)


def _baseline_acc(df: pd.DataFrame) -> dict:
    scored = ranking.scored(df)
    base = {k: v for k, v in ranking.baseline(scored).items() if k != "activation"}
    mask = pd.Series(True, index=scored.index)
    for k, v in base.items():
        mask &= scored[k] == v
    return scored[mask].groupby("depth")["test_acc"].mean().to_dict()


def _representatives(df: pd.DataFrame, limit: int = 6) -> list[tuple[str, list[float], str]]:
    """At the deepest depth: the best trial of each diagnosis, with its last per-block gradient norms."""
    cols = sorted(c for c in df.columns if c.startswith("block") and c.endswith("/grad_norm"))
    scored = ranking.scored(df)
    if not cols or scored.empty:
        return []
    deep = scored[scored["depth"] == scored["depth"].max()]
    rows = []
    for diagnosis, g in deep.groupby("diagnosis"):
        best = g.sort_values("test_acc").iloc[-1]
        norms = [best[c] for c in cols if pd.notna(best[c])]
        label = f"{best['activation']}/{best['init']}/{best['norm']}/{best['residual']}"
        rows.append((label, norms, diagnosis))
    return rows[:limit]


def _save(fig, path: Path) -> None:
    fig.savefig(path)


def _write_plots(df: pd.DataFrame, eff: pd.DataFrame, folder: Path, thresholds: Thresholds) -> list[str]:
    made = []
    scored = ranking.scored(df)
    if not eff.empty:
        _save(plots.accuracy_heatmap(eff, _baseline_acc(df)), folder / PLOTS[0])
        made.append(PLOTS[0])
    if not scored.empty and scored["grad_attenuation_init"].notna().any():
        _save(plots.attenuation_vs_depth(scored, vanishing=thresholds.vanishing), folder / PLOTS[1])
        made.append(PLOTS[1])
    reps = _representatives(df)
    if reps:
        _save(plots.layer_profiles(reps), folder / PLOTS[2])
        made.append(PLOTS[2])
    if not df.empty:
        _save(plots.diagnosis_counts(df), folder / PLOTS[3])
        made.append(PLOTS[3])
    plain = phase.predicted(scored)
    if not plain.empty and plain["grad_attenuation_init"].notna().any():
        _save(plots.measured_vs_predicted(plain), folder / THEORY_PLOTS[0])
        made.append(THEORY_PLOTS[0])
    if phase.has_phase_axes(scored):
        label = "test accuracy; red: 6 xi, the depth theory expects plain nets to train to"
        _save(phase.phase_figure(scored, "test_acc", label, trainable=True, cmap="RdYlGn", vmin=0, vmax=1),
              folder / THEORY_PLOTS[1])
        made.append(THEORY_PLOTS[1])
    return made


def _findings(df: pd.DataFrame, rank: pd.DataFrame, trends: pd.DataFrame) -> list[str]:
    counts = df["status"].value_counts().to_dict()
    lines = [f"{len(df)} trials: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))]
    if counts.get("running"):
        lines.append(f"**The sweep is still running**: {counts['running']} trials have not finished; this "
                     "report covers it as far as it got.")
    if not rank.empty:
        best = rank.iloc[0]
        depth = [c for c in rank.columns if c.startswith("delta_acc_d")][-1][len("delta_acc_d"):]
        interval = (f", 95% CI {_fmt(best['ci_low'])} .. {_fmt(best['ci_high'])}"
                    if pd.notna(best["ci_low"]) else ", no interval: one pair")
        lines.append(f"Best mitigation at depth {depth}: **{best['mitigation']}**, test accuracy "
                     f"{best['baseline_acc']:.2f} -> {best['mitigated_acc']:.2f} "
                     f"({best['delta_test_acc']:+.2f}{interval}); "
                     f"made {best['rescued']} of {best['unhealthy_baselines']} unhealthy baselines healthy.")
    if not trends.empty:
        verdicts = trends["verdict"].value_counts().to_dict()
        lines.append("Configurations losing >= 10 points of accuracy with depth: " +
                     ", ".join(f"{n} {v}" for v, n in verdicts.items()) + ".")
        if verdicts.get("degradation"):
            lines.append(f"{verdicts['degradation']} of them kept healthy gradients at depth: that is "
                         "degradation (He et al. 2016), an optimization problem that vanishing gradients do "
                         "not explain.")
    agreement = phase.agreement_finding(ranking.scored(df))
    if agreement:
        lines.append(agreement)
    return lines


def _markdown(name: str, findings: list[str], tables: dict[str, pd.DataFrame], images: list[str]) -> str:
    parts = [f"# vgtune report: {name}\n", *[f"- {line}" for line in findings], ""]
    parts.append(METHOD + "\n")
    for title, table in tables.items():
        parts += [f"## {title}\n", markdown_table(table)]
    parts += ["## Plots\n"] + [f"![{img}]({img})\n" for img in images]
    return "\n".join(parts)


def _html(name: str, findings: list[str], tables: dict[str, pd.DataFrame], images: list[str], folder: Path) -> str:
    style = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;font-size:12px;margin-bottom:1.5em}"
             "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}th{background:#f2f2f2}"
             "img{max-width:100%;margin:0.5em 0}")
    body = [f"<h1>vgtune report: {html.escape(name)}</h1><ul>"]
    body += [f"<li>{html.escape(line).replace('**', '')}</li>" for line in findings] + ["</ul>"]
    body.append(f"<p>{html.escape(METHOD)}</p>")
    for title, table in tables.items():
        body.append(f"<h2>{html.escape(title)}</h2>")
        body.append(table.head(60).to_html(index=False, float_format=lambda v: f"{v:.3g}", na_rep="")
                    if not table.empty else "<p>(none)</p>")
    body.append("<h2>Plots</h2>")
    for img in images:
        data = base64.b64encode((folder / img).read_bytes()).decode()
        body.append(f'<img alt="{img}" src="data:image/png;base64,{data}">')
    return f"<!doctype html><html><head><meta charset='utf-8'><title>vgtune {html.escape(name)}</title>" \
           f"<style>{style}</style></head><body>{''.join(body)}</body></html>"


def _sweep_run(uri: str, experiment: str):
    client = client_for(uri)
    exp = client.get_experiment_by_name(experiment)
    return client, latest_sweep_run(client, [exp.experiment_id])


def thresholds_of(run) -> Thresholds:
    """The diagnosis thresholds a sweep ran with (its `thresholds.*` params; defaults if absent)."""
    given = {k.split(".", 1)[1]: float(v) for k, v in (run.data.params if run else {}).items()
             if k.startswith("thresholds.")}
    return Thresholds(**{k: v for k, v in given.items() if k in vars(Thresholds())})


def write(df: pd.DataFrame, name: str, folder: Path,
          thresholds: Thresholds | None = None) -> tuple[list[str], pd.DataFrame]:
    """All report files for a trials frame (no MLflow needed); returns (findings, ranking)."""
    folder.mkdir(parents=True, exist_ok=True)
    eff = ranking.effects(df)
    rank = ranking.ranking(eff)
    trends = ranking.depth_trends(df)
    tables = {"Mitigation ranking (effect at the deepest depth)": rank,
              "Effect per mitigation and depth": eff,
              "Main effects": ranking.main_effects(df),
              "Best configuration per depth": ranking.best_per_depth(df),
              "Accuracy drops with depth: vanishing or degradation?": trends}
    if not phase.predicted(df).empty:
        factors = ranking.varying(df, list(FACTORS)) or ["depth"]
        tables |= {"Theory: critical sigma_w^2 per activation and the named inits closest to it":
                   phase.critical_inits(df),
                   "Theory: plain configurations whose init attenuation departs from the prediction":
                   phase.departure_table(df, factors)}
    trials_table(df).to_csv(folder / "trials.csv", index=False)
    eff.to_csv(folder / "ranking.csv", index=False)
    for fname, table in zip(("mitigations.csv", "main_effects.csv", "best_per_depth.csv", "depth_trends.csv",
                             "theory_critical.csv", "theory_departures.csv"), [rank, *list(tables.values())[2:]]):
        table.to_csv(folder / fname, index=False)
    images = _write_plots(df, eff, folder, thresholds or Thresholds())
    findings = _findings(df, rank, trends)
    (folder / "report.md").write_text(_markdown(name, findings, tables, images))
    (folder / "report.html").write_text(_html(name, findings, tables, images, folder))
    return findings, rank


def build(experiment: str, uri: str, out_root: Path, show: bool = False, sweep: str | None = None,
          log_artifacts: bool = True) -> Path:
    """Write the report folder for `experiment` from MLflow and return it."""
    df = load_trials(uri, experiment, sweep)
    client, run = _sweep_run(uri, experiment)
    folder = out_root / experiment
    findings, rank = write(df, experiment, folder, thresholds_of(run))
    if log_artifacts and run is not None:
        client.log_artifacts(run.info.run_id, str(folder), "report")
    if show:
        _print_summary(findings, rank)
    return folder


def _print_summary(findings: list[str], rank: pd.DataFrame) -> None:
    print()
    for line in findings:
        print(line.replace("**", ""))
    if not rank.empty:
        cols = ["rank", "mitigation", "n", "baseline_acc", "mitigated_acc", "delta_test_acc", "ci_low", "ci_high",
                "delta_attenuation", "transitions"]
        with pd.option_context("display.width", 200, "display.max_colwidth", 40, "display.precision", 2):
            print(rank[cols].head(10).to_string(index=False))
