"""Calibration of the sweep's verdicts, as a whole, on simulated sweeps whose true effects are known.

Every simulated sweep is the default sweep's design (`sweeps/default.yaml`: 30 arms, the lr
grid with its bracket, looks of 5, 10 and 20 fresh seeds, the family of the 14 depth-24
comparisons) driven by the real decision code: `vgtune.analysis.design.Design` proposes every
trial (selection, bracket steps, each look) and stops each comparison by the rule the report
states (`vgtune.analysis.verdicts`). Only the trials' outcomes are simulated: a trial's test
accuracy is its arm's quality at its learning rate plus the seed's noise, its validation
accuracy the same plus a little split noise. For a share of the sweeps the report's own
analysis (`vgtune.analysis.effects.effects` on the trials table) re-derives every verdict,
which must match the design's.

A verdict is wrong when it contradicts the truth at the settings the arms chose: `helps`
where the true difference is <= 0, `hurts` where >= 0, `negligible` where |difference| >=
margin. Cells (`VGTUNE_BENCH_REPS` sweeps each, default 200):

- null effects (every arm of a cell as good as its baseline) with Gaussian and heavy-tailed
  (Student t, 3 df) seed noise, and with stuck baselines: a depth-24 baseline that scores
  the same on every seed beside noisy mitigations, and a failed one that jitters around the
  chance rate beside mitigations that diverge (scored at it): the family-wise rate of any
  wrong verdict;
- true effects of 2, 5, 10 and 20 points (3 each): power, and the mean seeds used;
- true effects of exactly +-margin: the family-wise rate of any `negligible`;
- learning-rate optima 1 to 3 grid steps past the grid's edge: how often the bracket finds
  them, and how often an arm ends on the edge of what it tried;
- the baseline the looks replace: a fixed-n test re-run after each look at the comparison's
  whole level, against the spent levels, per comparison (a numpy simulation of its own);
- the bias of the reported effect after each arm's learning rate is chosen on validation:
  reporting the choosing seeds' test accuracy (the old way) against fresh seeds.
"""

from __future__ import annotations

import math
import os
import time
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd
from scipy import stats as sps

from vgtune.analysis import effects, fairness, sequential
from vgtune.analysis import verdicts as vd

SPREAD = 0.03  # seed-to-seed sd of one arm's test accuracy (3 points)
SPLIT = 0.005  # validation's extra noise over test's, for the same network
CHANCE = 0.10  # the chance rate (majority-class share) of the simulated test split
ALPHA = 0.05
EFFECTS = (0.02, 0.05, 0.10, 0.20)  # true effects whose power is measured
STEP = math.log(4)  # the default grid's ratio, in log lr
CURVE = 0.05  # accuracy lost per grid step squared away from an arm's best rate, in the bracket cell


def reps() -> int:
    return int(os.environ.get("VGTUNE_BENCH_REPS", "200"))


@lru_cache(maxsize=1)
def _spec():
    from vgtune.driver import spec as spec_mod

    return spec_mod.load(os.path.join(os.path.dirname(__file__), "..", "sweeps", "default.yaml"))


@dataclass
class Arm:
    """An arm's truth: its quality at its best rate, that rate, and how its trials behave."""

    quality: float = 0.6  # mean test accuracy at `best_lr`
    best_lr: float = 0.02  # where the quality peaks (CURVE per grid step squared away; 0 in flat worlds)
    curve: float = 0.0  # accuracy lost per grid step squared
    kind: str = "normal"  # normal | stuck (one score on every seed) | jitter (around chance) | diverged

    def mean(self, lr: float) -> float:
        """The true expected score at `lr` (failure-scored: a failing arm scores chance)."""
        if self.kind in ("jitter", "diverged"):
            return CHANCE
        return self.quality - self.curve * (math.log(lr / self.best_lr) / STEP) ** 2


def _noise(rng: np.random.Generator, kind: str) -> float:
    if kind == "heavy":  # Student t with 3 df, scaled to the same sd
        return float(rng.standard_t(3) * SPREAD / math.sqrt(3.0))
    return float(rng.normal(0.0, SPREAD))


def world(cell: str, rep: int) -> dict[str, Arm]:
    """arm id -> its truth, for one simulated sweep of `cell`."""
    spec = _spec()
    rng = np.random.default_rng([zlib.crc32(cell.encode()), rep])
    arms: dict[str, Arm] = {}
    rows = {m["arm"]: (t, m) for t, m in zip(spec.trials, spec.meta)}
    mitigations = [a for a, (_, m) in rows.items() if m["variant"]]
    for arm, (t, m) in rows.items():
        deep, plain = t["depth"] == 24, not m["variant"]
        truth = Arm(quality=0.6 if deep else 0.9)
        if cell == "null, stuck baselines" and deep and plain:
            truth = Arm(quality=0.6, kind="stuck") if t["activation"] != "sigmoid" else Arm(kind="jitter")
        elif cell == "null, stuck baselines" and deep and t["activation"] == "sigmoid" and "init" in m["variant"]:
            truth = Arm(kind="diverged")  # beside a baseline that jitters around chance: both failed
        elif cell == "effects" and deep and not plain:
            truth = Arm(quality=0.6 + EFFECTS[mitigations.index(arm) % len(EFFECTS)])
        elif cell == "margin" and deep:  # every family comparison, activations' included, differs by +-margin
            margin = _spec().margin
            base = 0.6 + margin * {"sigmoid": 0, "tanh": 1, "relu": -1}[t["activation"]]
            truth = Arm(quality=base + (0 if plain else (1 if mitigations.index(arm) % 2 else -1) * margin))
        elif cell == "bracket":
            steps = int(rng.integers(-1, 4))  # 1 step below the grid .. 3 steps above it (extend reaches 2)
            truth = Arm(quality=0.6 if deep else 0.9, best_lr=0.02 * 4.0 ** (1 + steps) if steps > 0 else
                        (0.005 / 4 if steps < 0 else 0.02), curve=CURVE)
        arms[arm] = truth
    return arms


def outcome(arm: Arm, lr: float, rng: np.random.Generator, noise: str) -> dict[str, float | str]:
    if arm.kind == "diverged":
        return {"status": "diverged", "val_acc": CHANCE, "test_acc": CHANCE, "chance_acc": CHANCE}
    if arm.kind == "stuck":
        return {"status": "completed", "val_acc": arm.quality, "test_acc": arm.quality, "chance_acc": CHANCE}
    base = CHANCE if arm.kind == "jitter" else arm.mean(lr)
    test = float(np.clip(base + (rng.normal(0, 0.02) if arm.kind == "jitter" else _noise(rng, noise)), 0, 1))
    return {"status": "completed", "val_acc": float(np.clip(test + rng.normal(0, SPLIT), 0, 1)), "test_acc": test,
            "chance_acc": CHANCE}


def simulate(cell: str, rep: int, noise: str = "gaussian"):
    """One simulated sweep through the real design: (design, truth per arm, every trial's row)."""
    design = _spec().design()
    truth = world(cell, rep)
    rng = np.random.default_rng([zlib.crc32(cell.encode()), rep, 1])
    rows = []
    while not design.finished:
        for item in design.propose():
            result = outcome(truth[item["meta"]["arm"]], item["train"]["lr"], rng, noise)
            design.record(item, result)
            rows.append(item["train"] | item["meta"] | result | {"diagnosis": "healthy",
                                                                 "grad_attenuation_final": -1.0})
    return design, truth, rows


def wrong(verdict: str, difference: float, margin: float) -> bool:
    """Whether a verdict contradicts the true difference at the chosen settings."""
    return ((verdict == vd.HELPS and difference <= 0) or (verdict == vd.HURTS and difference >= 0)
            or (verdict == vd.NEGLIGIBLE and abs(difference) >= margin - 1e-12))


@dataclass
class Tally:
    """What one cell's sweeps added up to."""

    sweeps: int = 0
    any_wrong: int = 0  # sweeps with at least one wrong verdict in the family
    any_negligible: int = 0  # sweeps with at least one negligible in the family
    verdicts: dict | None = None  # verdict -> count over all family comparisons
    power: dict | None = None  # true effect -> [helps, comparisons, seeds used]
    bracket: dict | None = None  # found / reachable, on an edge / beyond reach ...
    mismatches: int = 0  # report-vs-design verdict disagreements in the rechecked sweeps
    rechecked: int = 0

    def add(self, other: Tally) -> None:
        for k in ("sweeps", "any_wrong", "any_negligible", "mismatches", "rechecked"):
            setattr(self, k, getattr(self, k) + getattr(other, k))
        for k in ("verdicts", "power", "bracket"):
            mine, theirs = getattr(self, k), getattr(other, k)
            if theirs:
                mine = mine or {}
                for key, value in theirs.items():
                    mine[key] = [a + b for a, b in zip(mine[key], value)] if key in mine else list(value)
                setattr(self, k, mine)


def run_cell(cell: str, noise: str, first: int, count: int, recheck: int) -> Tally:
    """Sweeps `first`..`first + count - 1` of one cell; the report's analysis re-derives the first `recheck`."""
    spec, tally = _spec(), Tally(verdicts={}, power={}, bracket={})
    for rep in range(first, first + count):
        design, truth, rows = simulate(cell, rep, noise)
        chosen = design.chosen()
        judged = design.judgements()
        bad = neg = False
        for c in design.comparisons:
            if not c.family:
                continue
            j = judged[c.key]
            lr = {a: float(chosen[a].split("=")[1]) for a in (c.mitigated, c.baseline)}
            difference = truth[c.mitigated].mean(lr[c.mitigated]) - truth[c.baseline].mean(lr[c.baseline])
            bad |= wrong(j.verdict, difference, spec.margin)
            neg |= j.verdict == vd.NEGLIGIBLE
            tally.verdicts.setdefault(j.verdict, [0])[0] += 1
            if cell == "effects" and truth[c.mitigated].quality != truth[c.baseline].quality:
                size = round(truth[c.mitigated].quality - truth[c.baseline].quality, 6)
                entry = tally.power.setdefault(size, [0, 0, 0])
                entry[0] += j.verdict == vd.HELPS
                entry[1] += 1
                entry[2] += j.seeds
        if cell == "bracket":
            _bracket(design, truth, chosen, tally.bracket)
        tally.sweeps += 1
        tally.any_wrong += bad
        tally.any_negligible += neg
        if rep - first < recheck:
            tally.rechecked += 1
            tally.mismatches += _recheck(design, rows)
    return tally


def _bracket(design, truth: dict[str, Arm], chosen: dict[str, str], out: dict) -> None:
    """Per arm: was its best rate within `extend` steps of the grid, did the bracket choose it, did it end on the
    edge of what it tried."""
    grid = design.config.grid["lr"]
    for arm, label in chosen.items():
        best, lr = truth[arm].best_lr, float(label.split("=")[1])
        steps = round(math.log(best / max(grid)) / STEP) if best > max(grid) else (
            round(math.log(min(grid) / best) / STEP) if best < min(grid) else 0)
        tried = {float(k[1].split("=")[1]) for k in design.results if k[0] == arm and k[2] < design.config.first_seed}
        edge = lr in (min(tried), max(tried))
        extend = design.config.extend
        key = "inside" if steps < extend else ("at reach" if steps == extend else "beyond")
        out.setdefault(key, [0, 0, 0])
        out[key][0] += math.isclose(lr, best, rel_tol=1e-6)
        out[key][1] += edge
        out[key][2] += 1


def _recheck(design, rows: list[dict]) -> int:
    """Verdicts the report's analysis (`effects.effects` on the trials table) gets differently from the design."""
    spec = _spec()
    df = pd.DataFrame(rows)
    confirmed = df[df["stage"] == "confirm"]
    eff = effects.effects(confirmed, nuisance=spec.nuisance, plan=vd.Plan(spec.looks, spec.margin, spec.correction),
                          family=spec.family, chance_margin=spec.thresholds.chance_margin,
                          family_size=spec.family_size)
    judged = {k: j.verdict for k, j in design.judgements().items()}
    cells = ["depth", *effects.cell_columns(eff)]
    family = eff[eff["family"]]
    keys = ["|".join([r["mitigation"], *(f"{c}={r[c]}" for c in cells if effects.label(r[c]))])
            for _, r in family.iterrows()]
    return int(sum(judged.get(k) != v for k, v in zip(keys, family["verdict"])))


CELLS = (("null, Gaussian", "null", "gaussian"), ("null, heavy-tailed", "null", "heavy"),
         ("null, stuck baselines", "null, stuck baselines", "gaussian"), ("effects", "effects", "gaussian"),
         ("margin", "margin", "gaussian"), ("bracket", "bracket", "gaussian"))


def _all_cells() -> dict[str, Tally]:
    """Every cell, in two processes (the machine's two cores), each cell split in two halves."""
    n, recheck = reps(), max(1, reps() // 20)
    jobs = [(name, cell, noise, first, count, recheck if first == 0 else 0)
            for name, cell, noise in CELLS for first, count in ((0, n // 2), (n // 2, n - n // 2))]
    with ProcessPoolExecutor(max_workers=2) as pool:
        futures = [(job[0], pool.submit(run_cell, *job[1:])) for job in jobs]
        out: dict[str, Tally] = {}
        for name, future in futures:
            out.setdefault(name, Tally()).add(future.result())
    return out


def naive_vs_spent(rng: np.random.Generator, comparisons: int = 20000) -> tuple[float, float, float]:
    """(per-comparison error of a fixed-n t test re-run at each look at the comparison's whole level, of the spent
    levels, that level): null paired differences, looks of 5, 10, 20 seeds."""
    spec = _spec()
    level = vd.Plan(spec.looks, spec.margin, spec.correction, spec.family_size).level
    spent = sequential.levels(spec.looks, level)
    diffs = rng.normal(0, SPREAD * math.sqrt(2), (comparisons, spec.looks[-1]))
    naive = np.zeros(comparisons, bool)
    ours = np.zeros(comparisons, bool)
    for n, a in zip(spec.looks, spent):
        x = diffs[:, :n]
        t = np.abs(x.mean(1)) / (x.std(1, ddof=1) / math.sqrt(n))
        naive |= t > sps.t.isf(level / 2, n - 1)
        ours |= t > sps.t.isf(a / 2, n - 1)
    return float(naive.mean()), float(ours.mean()), level


def _trial(arm: str, norm: str, lr: float, seed: int, acc: float, stage: str) -> dict:
    return {"arm": arm, "norm": norm, "lr": lr, "nuisance": f"lr={lr}", "seed": seed, "stage": stage,
            "status": "completed", "diagnosis": "healthy", "grad_attenuation_final": -1.0, "variant": "",
            "activation": "relu", "depth": 24, "chance_acc": CHANCE, "val_acc": acc + 0.005, "test_acc": acc}


def selection_bias(spread: float, rng: np.random.Generator, n_seeds: int = 2, fresh: int = 5) -> tuple[float, float]:
    """(bias of the reported effect when the choosing seeds' test scores are reported, with fresh seeds'), in
    points. A stuck baseline (zero spread) against a mitigation whose 3 learning rates are equally good; a trial's
    validation and test scores both follow its network's quality, as they do in a real sweep."""
    truth, old, new = 0.35, [], []
    for _ in range(reps()):
        rows = [_trial("p", "none", lr, seed, 0.25, "select") for lr in (0.005, 0.02, 0.08) for seed in range(n_seeds)]
        rows += [_trial("b", "batch", lr, seed, 0.6 + rng.normal(0, spread), "select")
                 for lr in (0.005, 0.02, 0.08) for seed in range(n_seeds)]
        first = fairness.select(pd.DataFrame(rows))
        chosen = first.loc[first["selected"] & (first["arm"] == "b"), "lr"].iloc[0]
        confirm = [_trial("p", "none", 0.02, seed, 0.25, "confirm") for seed in range(n_seeds, n_seeds + fresh)]
        confirm += [_trial("b", "batch", chosen, seed, 0.6 + rng.normal(0, spread), "confirm")
                    for seed in range(n_seeds, n_seeds + fresh)]
        old.append(_mean_effect(first[first["selected"]]) - truth)
        new.append(_mean_effect(pd.DataFrame(confirm)) - truth)
    return 100 * float(np.mean(old)), 100 * float(np.mean(new))


def _mean_effect(df: pd.DataFrame) -> float:
    return float(effects.effects(df, nuisance=["lr"])["delta_test_acc"].iloc[0])


def _mc(rate: float, n: int) -> float:
    """Two Monte Carlo standard errors of a rate from n sweeps."""
    p = max(rate, ALPHA)
    return 2 * math.sqrt(p * (1 - p) / max(1, n))


def run() -> list[dict]:
    t0 = time.perf_counter()
    cells = _all_cells()
    rows: list[dict] = []
    for name in ("null, Gaussian", "null, heavy-tailed", "null, stuck baselines"):
        t = cells[name]
        rate = t.any_wrong / t.sweeps
        counts = ", ".join(f"{v[0]} {k}" for k, v in sorted(t.verdicts.items()))
        rows.append({"name": f"stats: null FWER of any wrong verdict, {name}", "value": rate,
                     "target": f"<= {ALPHA:g}", "ok": rate <= ALPHA + _mc(ALPHA, t.sweeps),
                     "note": f"+-{_mc(rate, t.sweeps):.3f} (2 MC s.e.); verdicts, {t.sweeps} sweeps x 14: {counts}"})
    t = cells["null, Gaussian"]
    rows.append({"name": "stats: null effects called negligible (share of comparisons)",
                 "value": t.verdicts.get(vd.NEGLIGIBLE, [0])[0] / (14 * t.sweeps), "target": "report",
                 "note": f"margin {_spec().margin:g}, at most {_spec().looks[-1]} seeds"})
    e = cells["effects"]
    for size in sorted(e.power):
        hits, n, seeds = e.power[size]
        share = hits / n
        row = {"name": f"stats: power, true effect {100 * size:g} points", "value": share, "target": "report",
               "note": f"+-{2 * math.sqrt(share * (1 - share) / n):.3f}; mean seeds used {seeds / n:.1f}"}
        if math.isclose(size, 0.05):
            row |= {"target": ">= 0.8", "ok": share >= 0.8}
        rows.append(row)
        if math.isclose(size, 0.10):
            rows.append({"name": "stats: mean seeds used, true effect 10 points", "value": seeds / n,
                         "target": "<= 12", "ok": seeds / n <= 12})
    rate = e.any_wrong / e.sweeps
    rows.append({"name": "stats: FWER of any wrong verdict, true effects of 2-20 points", "value": rate,
                 "target": f"<= {ALPHA:g}", "ok": rate <= ALPHA + _mc(ALPHA, e.sweeps)})
    m = cells["margin"]
    rate = m.any_negligible / m.sweeps
    rows.append({"name": "stats: FWER of any negligible, true effects = +-margin", "value": rate,
                 "target": f"<= {ALPHA:g}", "ok": rate <= ALPHA + _mc(ALPHA, m.sweeps),
                 "note": f"+-{_mc(rate, m.sweeps):.3f}"})
    b = cells["bracket"].bracket
    found, edge, n = (sum(b[k][i] for k in ("inside", "at reach")) for i in range(3))
    rows.append({"name": "stats: bracket finds a best rate <= extend steps out", "value": found / n,
                 "target": "report", "note": f"{n} arms, 1 selection seed; {b['inside'][1] / b['inside'][2]:.3f} of "
                                           "those with room to spare ended on the edge of what they tried"})
    found, edge, n = b["beyond"]
    rows.append({"name": "stats: arms whose best rate lies past extend, on an edge", "value": edge / n,
                 "target": "report", "note": f"{n} arms: the report names them (extend ran out)"})
    rechecked = sum(c.rechecked for c in cells.values())
    rows.append({"name": "stats: report vs design verdicts that differ", "value": sum(c.mismatches for c in
                                                                                  cells.values()),
                 "target": "0", "ok": sum(c.mismatches for c in cells.values()) == 0,
                 "note": f"{rechecked} sweeps re-judged from their trials table by the report's analysis"})
    rng = np.random.default_rng(2026)
    naive, ours, level = naive_vs_spent(rng)
    rows.append({"name": "stats: fixed-n test re-run per look / nominal, per comparison", "value": naive / level,
                 "target": "report", "note": f"the replaced way; the spent levels: {ours / level:.2f}x "
                                             f"(nominal {level:.5f}, 20,000 null comparisons)"})
    for spread in (0.03, 0.10):
        old, new = selection_bias(spread, rng)
        se = 2 * 100 * spread / math.sqrt(5 * reps())
        rows.append({"name": f"stats: selection bias (points), seed spread {100 * spread:g}, fresh seeds",
                     "value": new, "target": f"|x| <= {se:.2f}", "ok": abs(new) <= se,
                     "note": f"the choosing seeds' own test scores (the replaced way): {old:+.2f} points"})
    rows.append({"name": "stats: seconds", "value": time.perf_counter() - t0, "target": "<= 300",
                 "ok": time.perf_counter() - t0 <= 300, "note": f"{reps()} simulated sweeps per cell, 2 processes"})
    return rows
