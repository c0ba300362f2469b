"""`vgtune sweep | probe | report`: the command line, a thin shell over `vgtune.api`.

Bad input ends with one line `vgtune: error: ...` and exit status 2, before Ray
starts and before any MLflow run is created.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import time

import vgtune
from vgtune import api
from vgtune.driver.spec import SpecError
from vgtune.exceptions import InputError
from vgtune.tracking.store import TrackingError


def _add_sweep(sub) -> None:
    p = sub.add_parser("sweep", help="run a sweep spec through Ray Tune, tracked in MLflow")
    p.add_argument("spec", help="sweep spec, e.g. sweeps/default.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a spec key, e.g. --set fixed.epochs=2 --set parameters.depth=[4,8]")
    p.add_argument("--resume", action="store_true", help="continue the newest unfinished run of this spec")
    p.add_argument("--address", help="Ray cluster address (default: local Ray sized to this machine)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or "
                                          "sqlite:///mlflow.db)")
    p.add_argument("--storage", default="runs", help="Tune results and checkpoints (default: runs)")
    p.add_argument("--out", default="reports", help="report root folder (default: reports)")
    p.add_argument("--num-cpus", type=int, help="local Ray only: CPUs to use (default: all)")
    p.add_argument("--dry-run", action="store_true", help="print the trial count and a few configs, run nothing")
    p.add_argument("--no-report", action="store_true", help="skip the report at the end")
    p.add_argument("-v", "--verbose", type=int, default=1, choices=(0, 1, 2),
                   help="0 silent; 1 one progress line (default); 2 Tune's status table and trial events")


def _add_probe(sub) -> None:
    p = sub.add_parser("probe", help="gradient flow at initialization for every config of a spec (no training)")
    p.add_argument("spec")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", default="reports", help="writes OUT/<name>/probe.csv, probe_blocks.csv and "
                                                    "probe_profiles.png (default: reports)")


def _add_report(sub) -> None:
    p = sub.add_parser("report", help="rank the mitigations of a sweep from its MLflow runs")
    p.add_argument("experiment", nargs="?", help="MLflow experiment (= the spec's name), or one sweep's id as "
                                                 "`vgtune sweep` printed it")
    p.add_argument("--last", action="store_true", help="the experiment of the most recent sweep")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or "
                                          "sqlite:///mlflow.db)")
    p.add_argument("--out", default="reports", help="writes OUT/<experiment>/ (default: reports)")
    p.add_argument("--sweep", help="only the runs of this sweep (its id, e.g. tiny-20261202-031500); with no "
                                   "EXPERIMENT, its own experiment")


def _dry_run(spec) -> int:
    print(f"{spec.name}: at most {spec.total_trials} trials; factors: {', '.join(spec.factors) or '(none)'}")
    better = "higher" if spec.mode == "max" else "lower"
    why = "from the spec" if "mode" in spec.raw else f"inferred: {better} {spec.metric} is better; mode: overrides"
    print(f"  metric: {spec.metric}, mode: {spec.mode} ({why})")
    arms = len(spec.arms)
    if spec.nuisance:
        settings = len({m["nuisance"] for m in spec.meta})
        print(f"  select: {arms} arms x {settings} nuisance settings ({', '.join(spec.nuisance)}) x "
              f"{spec.repeats or 1} seeds = {len(spec.trials)} trials; each arm's setting is chosen on {spec.metric}, "
              f"trying up to {spec.extend} steps past an edge of its grid")
    if spec.looks:
        seeds = spec.confirm_seeds()
        which = "at its setting on fresh seeds" if spec.nuisance else "on seeds"
        print(f"  confirm: each arm {which} ({seeds[0]}..{seeds[-1]}), in looks of "
              f"{', '.join(map(str, spec.looks))} seeds, while a comparison of it is undecided; full budget")
        print(f"  verdicts: {spec.family_size} comparisons in the family ({spec.family}), {spec.correction}; "
              f"negligible inside +-{spec.margin:g}")
    if spec.pack != "off":
        print("  " + _pack_line(spec))
    for t in spec.trials[:5]:
        print("  " + ", ".join(f"{k}={t[k]}" for k in (spec.factors or ["depth", "activation"])))
    if len(spec.trials) > 5:
        print(f"  ... and {len(spec.trials) - 5} more")
    return 0


def _pack_line(spec) -> str:
    """How `pack:` groups the trials, for this machine's trial slots (a cluster's may differ)."""
    from vgtune.core import packing

    slots = max(1, int((os.cpu_count() or 1) // spec.resources.cpu))
    planned = packing.plan(spec.items, spec.pack, slots)
    sizes = [len(packing.members(p)) for p in planned if len(packing.members(p)) > 1]
    alone = len(planned) - len(sizes)
    if not sizes:
        return f"pack: {spec.pack}: no two trials share a shape; all {alone} train alone"
    return (f"pack: {spec.pack}: {sum(sizes)} trials in {len(sizes)} packs of {min(sizes)}-{max(sizes)}, "
            f"{alone} alone ({slots} trial slots here)")


def resume_command(args) -> str:
    """The exact `vgtune sweep ... --resume` line that continues this invocation's sweep."""
    words = ["vgtune", "sweep", args.spec]
    for item in args.overrides:
        words += ["--set", item]
    defaults = build_parser().parse_args(["sweep", args.spec])
    for name in ("address", "tracking_uri", "storage", "out", "num_cpus", "verbose"):
        value = getattr(args, name)
        if value != getattr(defaults, name):
            words += ["-v" if name == "verbose" else f"--{name.replace('_', '-')}", str(value)]
    if args.no_report:
        words.append("--no-report")
    return shlex.join(words + ["--resume"])


def _browse_hint(uri: str, experiment_id: str | None) -> str:
    """Where the runs table opens with vgtune's columns (`make ui` serves a SQLite store)."""
    from vgtune.tracking.logger import view_url

    if experiment_id is None:
        return "`make ui`"
    if uri.startswith("http"):
        return view_url(uri, experiment_id)
    return f"`make ui`, then {view_url('http://127.0.0.1:5000', experiment_id)}"


def cmd_sweep(args) -> int:
    started = time.perf_counter()  # the whole command, as a user times it: Ray start, trials, report
    if args.dry_run:  # the checks a real run makes before Ray starts, then what it would run
        return _dry_run(api.check_sweep(args.spec, args.overrides, tracking_uri=args.tracking_uri,
                                        storage=args.storage, out=args.out, num_cpus=args.num_cpus,
                                        address=args.address, resume=args.resume))
    try:
        outcome = api.run_trials(args.spec, args.overrides, tracking_uri=args.tracking_uri, storage=args.storage,
                                 out=args.out, num_cpus=args.num_cpus, address=args.address, resume=args.resume,
                                 verbose=args.verbose)
    except api.SweepInterrupted as stopped:
        print(f"\n{stopped}", file=sys.stderr)
        print(f"MLflow runs:   {stopped.outcome.tracking_uri} (experiment {stopped.outcome.experiment!r})",
              file=sys.stderr)
        print(f"Continue with: {resume_command(args)}", file=sys.stderr)
        return 128 + (stopped.outcome.signal or signal.SIGINT)
    packed = f" (packed into {outcome.tune_trials} Ray trials)" if outcome.tune_trials < len(outcome.trials) else ""
    print(f"\nsweep {outcome.sweep_id}: {len(outcome.trials)} trials{packed} in {outcome.wall_seconds:.0f}s, "
          f"{outcome.concurrency} at a time, {outcome.busy_share():.0%} of it training and evaluating")
    print(f"Tune results:  {outcome.path}")
    print(f"MLflow runs:   {outcome.tracking_uri} (experiment {outcome.experiment!r})")
    print(f"Browse:        {_browse_hint(outcome.tracking_uri, outcome.experiment_id)}")
    if not args.no_report:
        result = api.report(experiment=outcome.experiment, tracking_uri=outcome.tracking_uri, out=args.out)
        print(result.summary())
        print(f"Report:        {result.report_dir / 'report.html'}")
    whole = time.perf_counter() - started
    print(f"Whole command: {whole:.0f}s (Ray start, trials, report); the {outcome.concurrency} trial slots spent "
          f"{outcome.busy_share(whole):.0%} of it training and evaluating")
    return 0


def cmd_probe(args) -> int:
    import pandas as pd

    result = api.probe_spec(args.spec, args.overrides, out=args.out)
    with pd.option_context("display.max_rows", 60, "display.width", 160, "display.precision", 3):
        print(result.table.to_string(index=False, max_rows=60))
    print(f"\n{len(result.table)} configurations probed at initialization in {result.seconds:.1f}s "
          f"-> {result.path}")
    print(f"per-block series: {result.blocks_path}")
    print(f"profiles:         {result.profiles} (gradient norm per block, log scale)")
    for path, critical in result.phase_diagrams:
        print(f"phase diagram: {path} (theory: chi_1 = 1 at init_scale {critical:.3g})")
    return 0


def cmd_report(args) -> int:
    if args.last and (args.experiment or args.sweep):
        given = f"EXPERIMENT {args.experiment!r}" if args.experiment else f"--sweep {args.sweep!r}"
        raise SpecError(f"report: --last (every sweep of the most recent sweep's experiment) or {given}, not both")
    if not (args.experiment or args.sweep or args.last):
        raise SpecError("report: name an EXPERIMENT (or a sweep id), pass --sweep ID, or pass --last")
    if args.sweep:  # one sweep's runs, of EXPERIMENT if given (else of the sweep's own experiment)
        result = api.report(args.sweep, experiment=args.experiment, tracking_uri=args.tracking_uri, out=args.out)
    else:  # EXPERIMENT (or a sweep id, as `vgtune.report` takes it), or the most recent sweep's experiment
        result = api.report(args.experiment, tracking_uri=args.tracking_uri, out=args.out)
    print(result.summary())
    print(f"Report: {result.report_dir / 'report.html'}")
    return 0


def _as_flag(exc: InputError) -> str:
    """The error's line, a sweep option named as the flag the user typed (`--num-cpus`, not `num_cpus`)."""
    if exc.path in api.SWEEP_OPTIONS:
        return type(exc)(f"--{exc.path.replace('_', '-')}", exc.problem, exc.valid, exc.hint).message()
    return str(exc)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vgtune", description="Sweeps that show why deep CNNs stop training.")
    parser.add_argument("-V", "--version", action="version", version=f"vgtune {vgtune.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_sweep(sub)
    _add_probe(sub)
    _add_report(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = {"sweep": cmd_sweep, "probe": cmd_probe, "report": cmd_report}[args.command]
    try:
        code = handler(args)
        sys.stdout.flush()
        return code
    except InputError as exc:  # a spec, an option, an experiment, a dataset
        print(f"vgtune: error: {_as_flag(exc)}", file=sys.stderr)
        return 2
    except TrackingError as exc:
        print(f"vgtune: error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # The reader went away (`vgtune ... | head`): end quietly, as `ls | head` does. Point
        # stdout at /dev/null so the interpreter's own flush at exit does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except KeyboardInterrupt:
        hint = f"; continue with: {resume_command(args)}" if args.command == "sweep" else ""
        print(f"vgtune: interrupted{hint}", file=sys.stderr)
        return 128 + signal.SIGINT


if __name__ == "__main__":
    sys.exit(main())
