"""Build `reports/<experiment>/` from a sweep's MLflow runs.

Files: trials.csv, ranking.csv (at the deepest depth, one row per mitigation and
cell, best first), mitigations.csv (the effect of every mitigation at every depth
and cell: one row per comparison, with its interval and verdict), main_effects.csv,
best_per_depth.csv, depth_trends.csv, report.md, a self-contained report.html
(plots embedded) and the PNG plots. The folder is also logged under `report/` on
the newest parent run of the experiment (of the one sweep reported, where `sweep`
names it). `read_tables` reads a folder back, also
one written before ranking.csv and mitigations.csv swapped names.
"""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from vgtune.analysis import effects, fairness, phase, plots
from vgtune.analysis import verdicts as vd
from vgtune.core.columns import CONTRACT_FACTORS, SELECTION_METRICS, SWEEP, TRIALS_HEAD
from vgtune.core.diagnosis import Thresholds
from vgtune.core.member import SCHEDULER_STOP
from vgtune.core.schema import FACTORS, RUNNING
from vgtune.tracking.logger import log_report
from vgtune.tracking.reader import experiment_sweep_run, load_trials

METHOD = " ".join(effects.__doc__.split("\n\n")[1].split())  # how effects are computed, for the reader
PLOTS = ("accuracy_heatmap.png", "attenuation_vs_depth.png", "layer_profiles.png", "diagnoses.png", "forest.png")
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
    cols = list(TRIALS_HEAD) + [f for f in FACTORS if f not in CONTRACT_FACTORS] + [SWEEP]
    return df.reindex(columns=cols)


def _baseline_acc(df: pd.DataFrame) -> dict:
    scored = effects.scored(df)
    base = {k: v for k, v in effects.baseline(scored).items() if k != "activation"}
    mask = pd.Series(True, index=scored.index)
    for k, v in base.items():
        mask &= scored[k] == v
    return scored[mask].groupby("depth")["test_acc"].mean().to_dict()


def _representatives(df: pd.DataFrame, limit: int = 6) -> list[tuple[str, list[float], str]]:
    """At the deepest depth: the best trial of each diagnosis, with its last per-block gradient norms."""
    cols = sorted(c for c in df.columns if c.startswith("block") and c.endswith("/grad_norm"))
    scored = effects.scored(df)
    if not cols or scored.empty:
        return []
    deep = scored[scored["depth"] == scored["depth"].max()]
    rows = []
    for diagnosis, g in deep.groupby("diagnosis"):
        best = g.sort_values("val_acc").iloc[-1]
        norms = [best[c] for c in cols if pd.notna(best[c])]
        label = f"{best['activation']}/{best['init']}/{best['norm']}/{best['residual']}"
        rows.append((label, norms, diagnosis))
    return rows[:limit]


def _save(fig, path: Path) -> None:
    fig.savefig(path)


def _write_plots(df: pd.DataFrame, eff: pd.DataFrame, folder: Path, thresholds: Thresholds,
                 margin: float | None) -> list[str]:
    made = []
    scored = effects.scored(df)
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
    if not eff.empty and eff["delta_test_acc"].notna().any():
        shown = eff[eff["family"]] if eff["family"].any() else eff
        _save(plots.forest(shown, margin, effects.cell_columns(eff)), folder / PLOTS[4])
        made.append(PLOTS[4])
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


def _cell(row: pd.Series, cells: list[str]) -> str:
    return ", ".join(f"{c}={row[c]}" for c in cells if str(row[c]) not in ("", "nan"))


def _best_lines(res: dict[str, pd.DataFrame], selection: Selection) -> list[str]:
    """Per cell at the deepest depth: the mitigation best on validation, its test effect, interval and verdict;
    then the family's verdicts, what they stand for, and how many seeds each comparison used."""
    rank, eff, cells = res["ranking"], res["effects"], effects.cell_columns(res["effects"])
    if rank.empty:
        return []
    depth = eff["depth"].max()
    lines = []
    # The activation comparison (across activations) is context for the rest, not a "best mitigation".
    for _, best in rank[(rank["rank"] == 1) & ~rank["mitigation"].str.startswith("activation=")].iterrows():
        where = _cell(best, cells)
        interval = (f", CI {100 * best['ci_low']:+.1f} .. {100 * best['ci_high']:+.1f} points over "
                    f"{best['seeds']} seeds" if pd.notna(best["ci_low"])
                    else f", no interval from {best['seeds']} seed(s)")
        chosen = f"; at {best['nuisance']}" if best["nuisance"] else ""
        failed = f"; diverged {best['diverged']} of {best['n']}" if best["diverged"] else ""
        verdict = best["verdict"] if isinstance(best["verdict"], str) and best["verdict"] else "not judged"
        lines.append(f"Best at depth {depth}{' (' + where + ')' if where else ''}, by validation accuracy: "
                     f"**{best['mitigation']}**, test accuracy {best['baseline_acc']:.2f} -> "
                     f"{best['mitigated_acc']:.2f} ({100 * best['delta_test_acc']:+.1f} points{interval}: {verdict}"
                     f"{chosen}{failed}); ends healthy in {best['healthy']} of {best['n']} seeds "
                     f"(baseline: {best['n'] - best['unhealthy_baselines']} of {best['n']}).")
    return lines + _verdict_lines(eff, selection)


CLAIMS = {"bonferroni": "the chance that any verdict in the family is wrong is at most 5%, whichever look it came from "
                        "(each comparison's share, 5%/{m}, spent over its looks)",
          "none": "unadjusted: each comparison at 5% on its own, so with {m} some wrong verdicts are expected",
          "holm": "the chance of any wrong helps/hurts in the family is at most 5% (Holm over its {m} comparisons); "
                  "its intervals are not simultaneous, so none is called negligible",
          "bh": "at most 5% of the family's helps/hurts are expected to be wrong (Benjamini-Hochberg over its {m}); "
                "that holds for the family as a whole, not for a part of it such as the best lines above"}


def _verdict_lines(eff: pd.DataFrame, selection: Selection) -> list[str]:
    """The family's verdict counts and the claim they carry; the seeds they used and why they stopped."""
    family = eff[eff["family"]]
    if family.empty:
        return []
    counts = family["verdict"].value_counts()
    m = selection.family_size or len(family)
    where = _family_words(selection.family, family)
    lines = [f"Verdicts on the family ({where}, {len(family)} comparisons, {selection.correction}): "
             + ", ".join(f"{counts.get(v, 0)} {v}" for v in vd.VERDICTS) + "; "
             + CLAIMS[selection.correction].format(m=m) + "."]
    if selection.correction in vd.SIMULTANEOUS:
        lines.append(f"Negligible means the interval lies inside +-{100 * selection.margin:g} points of test accuracy "
                     f"(`margin`). Each interval is the repeated confidence interval at the look its comparison "
                     "stopped (valid across every look); an effect that stopped early is biased away from 0, its "
                     "interval is not.")
    looks = family.groupby("look")["seeds"].agg(["size", "max"])
    lines.append("Seeds used: " + ", ".join(f"{int(r['size'])} ended at look {int(k)} ({int(r['max'])} seeds)"
                                            for k, r in looks.iterrows() if k) + ".")
    cells, planned = effects.cell_columns(eff), len(selection.looks or (1,))
    undecided = family[family["verdict"] == vd.INCONCLUSIVE]
    for words, rows in (("Inconclusive after the last look", undecided[undecided["look"] >= planned]),
                        ("Still open (the sweep has not run their next look)", undecided[undecided["look"] < planned])):
        if len(rows):
            lines.append(f"{words}: " + "; ".join(
                f"{r['mitigation']}{' (' + _cell(r, cells) + ')' if _cell(r, cells) else ''}, {int(r['seeds'])} "
                f"seeds, {100 * r['delta_test_acc']:+.1f} points" for _, r in rows.iterrows()) + ".")
    outside = len(eff) - len(family)
    if outside:
        lines.append(f"{outside} comparison(s) outside the family are shown with an unadjusted 95% interval and "
                     "no verdict.")
    return lines


def _family_words(family, rows: pd.DataFrame) -> str:
    if family in (None, effects.FAMILY_DEFAULT):
        return f"depth {rows['depth'].max()}"
    if family == "all":
        return "every comparison"
    return ", ".join(f"{k}={v}" for k, v in family.items())


def _changed_lines(res: dict[str, pd.DataFrame]) -> list[str]:
    """Which mitigations a single shared nuisance setting would have ranked or judged differently."""
    table = res.get("fixed_vs_tuned")
    if table is None or table.empty:
        return []
    cells = effects.cell_columns(res["effects"])
    deep = table[(table["depth"] == table["depth"].max()) & table["changed"]]
    shared = table["shared"].iloc[0]
    if deep.empty:
        return [f"On the selection seeds, one shared setting ({shared}, the best on average) would rank every "
                "mitigation at the deepest depth as each arm's own setting does."]
    moves = [f"{r['mitigation']}{' (' + _cell(r, cells) + ')' if _cell(r, cells) else ''}: rank "
             f"{_fmt(r['rank_fixed'])} -> {_fmt(r['rank_tuned'])}" for _, r in deep.iterrows()]
    return [f"On the selection seeds, at one shared setting ({shared}, the best on average) {len(deep)} mitigation(s) "
            f"at the deepest depth rank differently (by validation effect) than at each arm's own setting: "
            + "; ".join(moves) + "."]


def _findings(df: pd.DataFrame, res: dict[str, pd.DataFrame], selection: Selection) -> list[str]:
    counts = df["status"].value_counts().to_dict()
    lines = [f"{len(df)} trials: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))]
    if counts.get(RUNNING):
        lines.append(f"**The sweep is still running**: {counts['running']} trials have not finished; this "
                     "report covers it as far as it got.")
    elif not selection.finished:
        lines.append("**The sweep was interrupted** before its design had run everything: comparisons still open "
                     "are not final (`vgtune sweep SPEC --resume` continues it).")
    lines += _evidence_lines(df, res, selection)
    lines += _best_lines(res, selection) + _edge_lines(res["edges"], selection) + _changed_lines(res)
    trends = res["depth_trends"]
    if not trends.empty:
        verdicts = trends["verdict"].value_counts().to_dict()
        lines.append("Configurations losing >= 10 points of accuracy with depth, by what their deepest seeds' "
                     "gradients did: " + ", ".join(f"{n} {v}" for v, n in verdicts.items()) + " (degradation: every "
                     "deep seed kept healthy gradients; mixed: some did, some did not; otherwise the commonest "
                     "failure of the deep seeds).")
        if verdicts.get("degradation"):
            lines.append(f"{verdicts['degradation']} of them kept healthy gradients at depth: that is "
                         "degradation (He et al. 2016), an optimization problem that vanishing gradients do "
                         "not explain.")
    agreement = phase.agreement_finding(effects.scored(df))
    if agreement:
        lines.append(agreement)
    return lines


def _evidence_lines(df: pd.DataFrame, res: dict[str, pd.DataFrame], selection: Selection) -> list[str]:
    """Which trials the effects rest on, how their settings were chosen, and how failures are scored."""
    evidence, lines = res["evidence"], []
    if fairness.tuned(df):
        first = df[df["stage"] != "confirm"]
        how = (f"{df['arm'].nunique()} arms; each chose its {', '.join(selection.nuisance) or 'setting'} on "
               f"{selection.metric} over {first['seed'].nunique()} seed(s)")
        beyond = _bracketed(first)
        if beyond:
            how += f" ({beyond} tried steps past the edge of the grid)"
        if (df["stage"] == "confirm").any():
            seeds = sorted(evidence["seed"].unique())
            lines.append(f"{how}, then retrained at its choice on fresh seeds ({seeds[0]}..{seeds[-1]}, "
                         f"{_looks_words(selection)}) at the full budget; only their test accuracy enters the "
                         "effects below.")
        else:
            lines.append(f"{how}. **No fresh-seed confirmation** (a sweep from before `confirm:`): the test "
                         "accuracies below come from the seeds that chose the settings, so they are biased up.")
    failed = int(res["scored"]["failed"].sum()) if "failed" in res["scored"] else 0
    if failed:
        lines.append(f"{failed} compared trial(s) failed to train (diverged, stopped for a collapsed gradient, or at "
                     f"most {100 * selection.chance_margin:g} points above the chance rate): each scores the chance "
                     "rate (its test split's majority-class share), never its network's output, so two failed "
                     "networks differ by nothing.")
    stopped = evidence[evidence["status"] == "stopped"]
    cut = stopped[_cut_short(stopped)]
    if len(stopped) > len(cut):
        lines.append(f"{len(stopped) - len(cut)} compared trial(s) were stopped early for a collapsed gradient and "
                     "count as failed to train; `stop: {gradient_collapse: false}` trains every trial fully.")
    if len(cut):
        lines.append(f"{len(cut)} trial(s) were cut short by a scheduler or an interrupt: they ran part of the "
                     "budget and enter no comparison.")
    sweeps = evidence["sweep"].dropna().nunique() if "sweep" in evidence else 0
    if sweeps > 1:
        lines.append(f"This report pools {sweeps} sweeps of the experiment (each configuration's newest finished run "
                     "counts), and judges their comparisons as one family.")
    return lines


def _cut_short(stopped: pd.DataFrame) -> pd.Series:
    """Stopped trials a scheduler or an interrupt ended (not the gradient-collapse stopper)."""
    if "stop_reason" not in stopped:
        return pd.Series(False, index=stopped.index)
    return stopped["stop_reason"].fillna("").astype(str).str.startswith(SCHEDULER_STOP)


def _looks_words(selection: Selection) -> str:
    if len(selection.looks or ()) > 1:
        return f"in looks of {', '.join(map(str, selection.looks))} seeds while a comparison of it was undecided"
    return "one look"


def _bracketed(first: pd.DataFrame) -> int:
    """Arms whose selection tried a setting besides the grid's (the settings every arm tried)."""
    if first.empty or "nuisance" not in first:
        return 0
    tried = first.groupby("arm")["nuisance"].agg(set)
    grid = set.intersection(*tried)
    return int(sum(bool(t - grid) for t in tried))


def _edge_lines(edges: pd.DataFrame, selection: Selection) -> list[str]:
    """Arms whose chosen setting lies on the edge of everything tried: the bracket ran out of steps."""
    if edges.empty:
        return ["No arm's chosen setting lies on the edge of what it tried."] if selection.nuisance else []
    shown = "; ".join(f"{r['label']} chose {r['option']}={r['chosen']:g}, the {r['edge']} tried ({r['tried']})"
                      for _, r in edges.head(4).iterrows())
    more = f" (and {len(edges) - 4} more, in edges.csv)" if len(edges) > 4 else ""
    ran_out = (f"after `extend` ({selection.extend} steps per side) ran out" if selection.extend
               else "with `extend: 0`")
    return [f"{len(edges)} arm(s) chose a setting on the edge of everything tried, {ran_out}: {shown}{more}. Their "
            "best setting may lie further out."]


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


def thresholds_of(run) -> Thresholds:
    """The diagnosis thresholds a sweep ran with (its `thresholds.*` params; defaults if absent)."""
    given = {k.split(".", 1)[1]: float(v) for k, v in (run.data.params if run else {}).items()
             if k.startswith("thresholds.")}
    return Thresholds(**{k: v for k, v in given.items() if k in vars(Thresholds())})


@dataclass
class Selection:
    """How a sweep chose each arm's nuisance setting and judges its effects (from the spec, via the sweep run)."""

    metric: str = "val_acc"  # never test data
    mode: str = "max"
    nuisance: tuple[str, ...] = ()  # options tuned per arm
    correction: str = "bonferroni"  # how the family shares its level (vgtune.analysis.verdicts)
    looks: tuple[int, ...] | None = None  # fresh seeds after each look; None: one look of every seed there is
    margin: float = vd.DEFAULT_MARGIN  # |effect| inside which a comparison is negligible
    family: Any = effects.FAMILY_DEFAULT  # the comparisons judged together
    family_size: int | None = None  # the design's count of them (None: counted in the trials)
    extend: int = 2  # bracket steps past each edge of a nuisance grid
    chance_margin: float = Thresholds.chance_margin  # accuracy at most this far above chance: did not train
    finished: bool = True  # the sweep run ended FINISHED (an interrupted sweep's open comparisons are not final)

    @classmethod
    def of(cls, run) -> Selection:
        params = run.data.params if run else {}
        metric = params.get("metric", "val_acc")
        looks = _looks(params)
        return cls(metric if metric in SELECTION_METRICS else "val_acc", params.get("mode", "max"),
                   tuple(k for k in params.get("nuisance", "").split(",") if k),
                   params.get("correction", "holm"),  # a run without one is from when holm was the only rule
                   looks, float(params.get("margin", vd.DEFAULT_MARGIN)),
                   yaml.safe_load(params["family"]) if params.get("family") else effects.FAMILY_DEFAULT,
                   int(params["family_size"]) if params.get("family_size") else None,
                   int(params.get("extend", 2)), thresholds_of(run).chance_margin,
                   run is None or run.info.status != "KILLED")

    def plan(self, evidence: pd.DataFrame) -> vd.Plan:
        """The plan the verdicts are judged by (one look of the most seeds an arm has, for a sweep without looks)."""
        looks = self.looks or (max(1, int(evidence.groupby("arm")["seed"].nunique().max()))
                               if "arm" in evidence and len(evidence) else 1,)
        return vd.Plan(tuple(looks), self.margin, self.correction)


def _looks(params: dict[str, str]) -> tuple[int, ...] | None:
    """A sweep run's looks: its `seeds` param; one look of `confirm` seeds for a sweep from before looks."""
    if params.get("seeds"):
        return tuple(int(v) for v in params["seeds"].split(","))
    confirm = params.get("confirm", "")
    return (int(confirm),) if confirm.isdigit() and int(confirm) else None


def analyse(df: pd.DataFrame, selection: Selection) -> dict[str, pd.DataFrame]:
    """Every table of the report. The selection trials chose each arm's nuisance setting (`selected`); the effects,
    ranks and "best" rest on the fresh confirmation seeds (on the chosen selection trials for a sweep without)."""
    df = stages(df)
    first = fairness.select(df[df["stage"] == "select"], selection.metric, selection.mode)
    confirmed = df[df["stage"] == "confirm"].assign(selected=True)
    if len(first) and len(confirmed):  # what confirmation ran is what selection chose, as recorded
        ran = first["arm"].map(dict(zip(confirmed["arm"], confirmed["nuisance"])))
        first = first.assign(selected=(first["nuisance"] == ran).where(ran.notna(), first["selected"]).astype(bool))
    df = pd.concat([first, confirmed]) if len(first) else confirmed
    evidence = confirmed if len(confirmed) else first[first["selected"]]
    nuisance = selection.nuisance
    eff = effects.effects(evidence, nuisance=nuisance, plan=selection.plan(evidence), family=selection.family,
                          chance_margin=selection.chance_margin, family_size=selection.family_size)
    out = {"trials": df, "evidence": evidence, "scored": effects.failures(effects.scored(evidence),
                                                                          selection.chance_margin),
           "effects": eff, "ranking": effects.ranking(eff),
           "remedies": fairness.remedies(eff), "main_effects": effects.main_effects(evidence, nuisance),
           "best_per_depth": effects.best_per_depth(evidence, nuisance),
           "depth_trends": effects.depth_trends(evidence, nuisance),
           "edges": fairness.edges(first, nuisance, selection.metric, selection.mode)}
    shared = fairness.shared_setting(first, selection.metric, selection.mode) if fairness.tuned(first) else None
    if shared is not None:  # what one shared setting would have concluded: both sides on the selection seeds
        fixed = effects.effects(first[first["nuisance"] == shared], nuisance=nuisance)
        tuned = effects.effects(first[first["selected"]], nuisance=nuisance)
        out["fixed_vs_tuned"] = fairness.compare(fixed, tuned).assign(shared=shared)
    return out


def stages(df: pd.DataFrame) -> pd.DataFrame:
    """`df` with its `stage` column filled: a trial without one (a sweep from before stages) is `select` where
    the sweep tuned nuisance options, else `confirm`."""
    stage = df["stage"].fillna("") if "stage" in df.columns else pd.Series("", index=df.index)
    return df.assign(stage=stage.where(stage != "", "select" if fairness.tuned(df) else "confirm"))


FILES = {"edges.csv": "edges", "ranking.csv": "ranking", "mitigations.csv": "effects", "remedies.csv": "remedies",
         "fixed_vs_tuned.csv": "fixed_vs_tuned", "main_effects.csv": "main_effects",
         "best_per_depth.csv": "best_per_depth", "depth_trends.csv": "depth_trends",
         "theory_critical.csv": "theory_critical", "theory_departures.csv": "theory_departures"}
TITLES = {"ranking": "Mitigation ranking at the deepest depth, per cell (ranked by validation effect; test effect "
                      "with the interval its verdict rests on)",
          "edges": "Arms whose chosen setting lies on the edge of everything tried (the bracket ran out of steps)",
          "remedies": "What each mitigation restores at the deepest depth",
          "fixed_vs_tuned": "One shared nuisance setting vs each arm's own, on the selection seeds (validation ranks)",
          "effects": "Effect per mitigation, depth and cell: verdict, interval, seeds and why it stopped",
          "main_effects": "Main effects", "best_per_depth": "Best configuration per depth",
          "depth_trends": "Accuracy drops with depth: vanishing or degradation?"}


def write(df: pd.DataFrame, name: str, folder: Path, thresholds: Thresholds | None = None,
          selection: Selection | None = None) -> tuple[list[str], dict[str, pd.DataFrame]]:
    """All report files for a trials frame (no MLflow needed); returns (findings, tables)."""
    folder.mkdir(parents=True, exist_ok=True)
    selection = selection or Selection()
    res = analyse(df, selection)
    tables = {TITLES[k]: res[k] for k in TITLES if k in res}
    if not phase.predicted(df).empty:
        factors = effects.varying(df, FACTORS) or ["depth"]
        res["theory_critical"], res["theory_departures"] = phase.critical_inits(df), phase.departure_table(df, factors)
        tables |= {"Theory: critical sigma_w^2 per activation and the named inits closest to it":
                   res["theory_critical"],
                   "Theory: plain configurations whose init attenuation departs from the prediction":
                   res["theory_departures"]}
    trials_table(res["trials"]).to_csv(folder / "trials.csv", index=False)
    for fname, key in FILES.items():
        if key in res:
            res[key].to_csv(folder / fname, index=False)
    images = _write_plots(res["evidence"], res["effects"], folder, thresholds or Thresholds(),
                          selection.margin if selection.correction in vd.SIMULTANEOUS else None)
    findings = _findings(res["trials"], res, selection)
    (folder / "report.md").write_text(_markdown(name, findings, tables, images))
    (folder / "report.html").write_text(_html(name, findings, tables, images, folder))
    return findings, res


@dataclass
class Report:
    """A written report: its folder, its summary lines and its tables by key (`trials`: as trials.csv; the others
    as in `FILES`, and the analysis' own `evidence`: the trials the effects rest on)."""

    folder: Path
    findings: list[str]
    tables: dict[str, pd.DataFrame]

    def summary(self) -> str:
        return summary(self.findings, self.tables)


def make(experiment: str, uri: str, out_root: Path, sweep: str | None = None, log_artifacts: bool = True) -> Report:
    """Write the report folder for `experiment` (only sweep folder `sweep`'s runs, if given) from MLflow."""
    df = load_trials(uri, experiment, sweep)
    run = experiment_sweep_run(uri, experiment, sweep)
    folder = out_root / experiment
    findings, res = write(df, experiment, folder, thresholds_of(run), Selection.of(run))
    if log_artifacts and run is not None:
        log_report(uri, run.info.run_id, folder)
    return Report(folder, findings, res | {"trials": trials_table(res["trials"])})


def build(experiment: str, uri: str, out_root: Path, show: bool = False, sweep: str | None = None,
          log_artifacts: bool = True) -> Path:
    """Write the report folder for `experiment` from MLflow and return it; `show` prints its summary."""
    made = make(experiment, uri, out_root, sweep, log_artifacts)
    if show:
        print(made.summary())
    return made.folder


def read_tables(folder: Path) -> dict[str, pd.DataFrame]:
    """The tables of a written report folder, by key (`trials` and those of `FILES`). A folder written before
    ranking.csv and mitigations.csv swapped names is read right too: of the two, the effects table is the one
    with a `depth` column (the ranking has one `delta_acc_d<depth>` column per depth instead)."""
    folder = Path(folder)
    tables = {"trials": pd.read_csv(folder / "trials.csv")}
    for fname, key in FILES.items():
        if (folder / fname).is_file():
            tables[key] = pd.read_csv(folder / fname)
    if {"ranking", "effects"} <= set(tables) and "depth" in tables["ranking"] and "depth" not in tables["effects"]:
        tables["ranking"], tables["effects"] = tables["effects"], tables["ranking"]
    return tables


# The printed remedies table: column -> its header, with the unit where it has one.
SHOWN = {"mitigation": "mitigation", "depth": "depth", "delta_attenuation_decades": "attenuation change (decades)",
         "healthy": "healthy", "seeds": "seeds", "diverged": "diverged", "effect_points": "effect (points)",
         "verdict": "verdict", "restores": "restores"}


def summary(findings: list[str], res: dict[str, pd.DataFrame]) -> str:
    """The findings and the remedies table, as `vgtune sweep` and `vgtune report` print them: accuracy effects in
    points, attenuation changes in decades."""
    lines = [""] + [line.replace("**", "") for line in findings]
    table = res.get("remedies", pd.DataFrame())
    if not table.empty:
        cells = effects.cell_columns(res["effects"])
        table = table.assign(effect_points=100 * table["delta_test_acc"])
        cols = [c for c in ["mitigation", "depth", *cells, *list(SHOWN)[2:]] if c in table.columns]
        shown = table[cols].head(40).astype(object).fillna("-").rename(columns=SHOWN)
        with pd.option_context("display.width", 220, "display.max_colwidth", 40, "display.max_rows", 40):
            text = shown.to_string(index=False, float_format=lambda v: f"{v:+.1f}")
        lines += ["", f"{TITLES['remedies']}:", text]
    return "\n".join(lines)
