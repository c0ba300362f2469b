"""`vgtune probe` and `vgtune report` end to end (no Ray needed)."""

import textwrap

import pandas as pd

from vgtune import cli


def test_probe_ranks_configs_by_attenuation_without_training(tmp_path, capsys):
    spec = tmp_path / "p.yaml"
    spec.write_text(textwrap.dedent("""
        name: probe
        parameters:
          depth: [4, 16]
          activation: [sigmoid, relu]
        fixed: {width: 8, init: default}
    """))
    assert cli.main(["probe", str(spec), "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "4 configurations probed at initialization" in out
    df = pd.read_csv(tmp_path / "probe" / "probe.csv")
    assert len(df) == 4 and df["grad_attenuation"].is_monotonic_increasing
    worst = df.iloc[0]
    assert (worst["depth"], worst["activation"], worst["diagnosis"]) == (16, "sigmoid", "vanishing")


def test_report_needs_an_experiment(tmp_path, capsys):
    assert cli.main(["report", "--tracking-uri", f"sqlite:///{tmp_path}/m.db"]) == 2
    assert "name an EXPERIMENT or pass --last" in capsys.readouterr().err


def test_report_last_with_no_sweep_says_so(tmp_path, capsys):
    assert cli.main(["report", "--last", "--tracking-uri", f"sqlite:///{tmp_path}/m.db"]) == 2
    assert "no vgtune sweep in" in capsys.readouterr().err
