"""`vgtune probe` and `vgtune report` end to end (no Ray needed)."""

import textwrap
import time

import pandas as pd
import pytest

from tests.helpers import free_port
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


def test_probe_keeps_each_configurations_blocks_and_draws_their_profiles(tmp_path, capsys):
    """probe_blocks.csv: one row per configuration and block, joined to probe.csv by `config`; the profiles'
    figure beside it; the command says where both are."""
    spec = tmp_path / "p.yaml"
    spec.write_text("name: prof\nparameters: {depth: [2, 5], activation: [tanh, relu]}\nfixed: {width: 4}\n")
    assert cli.main(["probe", str(spec), "--out", str(tmp_path)]) == 0
    out, folder = capsys.readouterr().out, tmp_path / "prof"
    blocks, table = pd.read_csv(folder / "probe_blocks.csv"), pd.read_csv(folder / "probe.csv")
    assert list(blocks.columns) == ["config", "depth", "activation", "block", "grad_norm", "weight_grad_norm",
                                    "act_mean", "act_std", "dead_frac", "saturated_frac"]
    assert len(blocks) == 2 + 2 + 5 + 5 and blocks["block"].dtype.kind == "i"
    assert blocks.groupby("config")["block"].max().to_dict() == table.set_index("config")["depth"].to_dict()
    first = blocks[blocks["block"] == 1].set_index("config")["grad_norm"]
    assert first.to_dict() == table.set_index("config")["grad_norm_first"].to_dict()
    assert (folder / "probe_profiles.png").read_bytes()[:4] == b"\x89PNG"
    assert f"per-block series: {folder / 'probe_blocks.csv'}" in out and str(folder / "probe_profiles.png") in out


def test_version_from_the_command_line_and_the_package(capsys):
    from importlib.metadata import version

    import vgtune

    for flag in ("--version", "-V"):
        with pytest.raises(SystemExit) as stop:
            cli.main([flag])
        assert stop.value.code == 0 and capsys.readouterr().out == f"vgtune {version('vgtune')}\n"
    assert vgtune.__version__ == version("vgtune")


def test_python_m_vgtune_is_the_command_line(python):
    proc = python.run("-m", "vgtune", "--help", timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith("usage: vgtune [-h] [-V] {sweep,probe,report}")


def _error_line(capsys) -> str:
    """The one line a refused command printed (nothing on stdout)."""
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1, err
    assert err.startswith("vgtune: error: ")
    return err.strip()


@pytest.mark.parametrize("args,message", [
    ([], "report: name an EXPERIMENT (or a sweep id), pass --sweep ID, or pass --last"),
    (["tiny", "--last"], "report: --last (every sweep of the most recent sweep's experiment) or EXPERIMENT 'tiny', "
                         "not both"),
    (["--last", "--sweep", "tiny-1"], "or --sweep 'tiny-1', not both"),
])
def test_report_refuses_a_missing_or_contradictory_choice(tmp_path, capsys, args, message):
    assert cli.main(["report", *args, "--tracking-uri", f"sqlite:///{tmp_path}/m.db"]) == 2
    assert message in _error_line(capsys)


@pytest.mark.parametrize("args", [["--last"], ["tiny"], ["--sweep", "tiny-20261202-031500"]])
def test_a_report_that_finds_no_store_writes_nothing(tmp_path, monkeypatch, capsys, args):
    """No store where the report looks: one line naming the command that makes one; no mlflow.db appears."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert cli.main(["report", *args]) == 2
    assert _error_line(capsys) == ("vgtune: error: no vgtune sweep in sqlite:///mlflow.db yet (no MLflow store "
                                   "there); run `vgtune sweep SPEC` first, or pass the --tracking-uri it used")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("uri,message", [
    (None, "is not reachable"),  # a port nothing listens on
    ("file:///tmp/mlruns", "is a folder store, which MLflow 3 no longer opens"),
    ("mlruns", "is a folder store"),
])
def test_a_report_from_a_store_it_cannot_open_errs_within_seconds(tmp_path, monkeypatch, capsys, uri, message):
    monkeypatch.chdir(tmp_path)
    uri = uri or f"http://127.0.0.1:{free_port()}"
    started = time.perf_counter()
    assert cli.main(["report", "--last", "--tracking-uri", uri]) == 2
    assert time.perf_counter() - started < 10
    assert message in _error_line(capsys)
    assert list(tmp_path.iterdir()) == []


def test_probe_applies_the_specs_saturation_threshold(tmp_path, capsys):
    spec = tmp_path / "sat.yaml"
    spec.write_text("name: sat\nparameters: {depth: [6]}\nfixed: {width: 8, activation: tanh, init: normal}\n")
    fractions = {}
    for eps in (0.05, 0.999):
        assert cli.main(["probe", str(spec), "--out", str(tmp_path), "--set", f"thresholds.saturation_eps={eps}"]) == 0
        fractions[eps] = pd.read_csv(tmp_path / "sat" / "probe.csv")["saturated_frac"].item()
    # Small weights keep tanh near 0: no unit has tanh' < 5% of its maximum, some have it < 99.9%.
    assert fractions[0.05] == 0.0 and fractions[0.999] > 0.01


def test_a_closed_pipe_ends_quietly(tmp_path, python):
    import subprocess

    spec = tmp_path / "many.yaml"
    spec.write_text("name: many\nparameters: {depth: [2, 3, 4, 5, 6, 7, 8]}\nfixed: {width: 4}\n")
    proc = python.popen("-m", "vgtune.cli", "sweep", spec, "--dry-run", stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before the first line is written (`| head -0`)
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141 and err == "", err


def test_resume_command_repeats_the_options_that_matter():
    args = cli.build_parser().parse_args(["sweep", "sweeps/x y.yaml", "--set", "fixed.epochs=2", "--storage", "/s",
                                          "--tracking-uri", "sqlite:///a.db", "-v", "0"])
    assert cli.resume_command(args) == ("vgtune sweep 'sweeps/x y.yaml' --set fixed.epochs=2 --tracking-uri "
                                        "sqlite:///a.db --storage /s -v 0 --resume")


def test_probe_draws_the_phase_diagram_with_the_critical_line(tmp_path, capsys):
    spec = tmp_path / "phase.yaml"
    spec.write_text("name: ph\nparameters: {init_scale: [0.3, 0.6, 1.0, 2.0], depth: [2, 8]}\n"
                    "fixed: {width: 8, activation: tanh, init: xavier_normal}\n")
    assert cli.main(["probe", str(spec), "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    df = pd.read_csv(tmp_path / "ph" / "probe.csv")
    assert {"chi1", "depth_scale", "grad_attenuation_predicted", "theory"} <= set(df.columns)
    assert (tmp_path / "ph" / "phase_tanh.png").stat().st_size > 0
    # tanh's critical sigma_w^2 is 1: Xavier's 2.78 times init_scale^2 crosses it between 0.6 and 1.0
    critical = float(out.split("chi_1 = 1 at init_scale ")[1].split(")")[0])
    assert 0.6 < critical < 1.0


@pytest.mark.parametrize("spec_lines,line", [
    ("metric: train_loss\n", "  metric: train_loss, mode: min (inferred: lower train_loss is better; mode: overrides)"),
    ("metric: train_acc\n", "  metric: train_acc, mode: max (inferred: higher train_acc is better; mode: overrides)"),
    ("metric: train_loss\nmode: max\n", "  metric: train_loss, mode: max (from the spec)"),
])
def test_a_dry_run_says_which_way_the_metric_is_optimized(tmp_path, capsys, spec_lines, line):
    spec = tmp_path / "s.yaml"
    spec.write_text("name: s\nparameters: {depth: [2]}\nfixed: {width: 4, epochs: 1}\n" + spec_lines)
    assert cli.main(["sweep", str(spec), "--dry-run", "--num-cpus", "1", "--storage", str(tmp_path / "runs"),
                     "--out", str(tmp_path / "r"), "--tracking-uri", f"sqlite:///{tmp_path}/m.db"]) == 0
    assert line in capsys.readouterr().out.splitlines()
