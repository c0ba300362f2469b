"""Run the benchmarks and print one table of ratios against their targets."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

SUITES = {
    "train": "bench.train_core",
    "tracking": "bench.tracking",
    "report": "bench.report",
    "sweep": "bench.sweep",
    "ceiling": "bench.ceiling",
    "pack": "bench.pack",
    "stats": "bench.stats",
    "theory": "bench.theory",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("suites", nargs="*", default=list(SUITES), help=f"any of: {', '.join(SUITES)}")
    args = parser.parse_args(argv)
    unknown = [s for s in args.suites if s not in SUITES]
    if unknown:
        parser.error(f"unknown suite(s) {', '.join(unknown)}; valid: {', '.join(SUITES)}")
    rows: list[dict] = []
    for name in args.suites:
        print(f"== {name}", flush=True)
        suite_rows = importlib.import_module(SUITES[name]).run()
        for r in suite_rows:
            print(f"   {r['name']}: {r['value']:.3f} (target {r.get('target', '')})", flush=True)
        rows.extend({**r, "ok": None if r.get("ok") is None else bool(r["ok"])} for r in suite_rows)
    print()
    print(f"{'benchmark':<58} {'value':>10} {'target':>10}  ok")
    failed = 0
    for r in rows:
        target = r.get("target", "")
        ok = r.get("ok")
        failed += ok is False
        mark = "" if ok is None else ("yes" if ok else "NO")
        print(f"{r['name']:<58} {r['value']:>10.3f} {target:>10}  {mark}")
        if r.get("note"):
            print(f"    {r['note']}")
    out = Path(".bench")
    out.mkdir(exist_ok=True)
    (out / "results.json").write_text(json.dumps(rows, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
