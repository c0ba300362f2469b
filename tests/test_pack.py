"""Trial packing: fused members against their solo runs, in PyTorch and through a real Ray + MLflow sweep."""

import math

import pytest
import torch
from mlflow.tracking import MlflowClient

from tests.helpers import untimed
from vgtune.core import packing
from vgtune.core.train import TrainConfig, train, train_pack
from vgtune.driver import spec as spec_mod
from vgtune.driver.runner import SweepOptions, run_sweep

BASE = dict(depth=6, width=4, epochs=2, limit=300, threads=1)
MEMBERS = [dict(seed=0, lr=0.05, init="default"), dict(seed=1, lr=0.02, init="xavier_normal"),
           dict(seed=2, lr=0.1, init="lsuv", init_scale=1.5)]
SHAPES = [dict(activation="tanh"), dict(activation="relu", norm="batch"),
          dict(activation="tanh", norm="group", residual="rezero"), dict(activation="relu", norm="layer", pool="max")]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "-".join(s.values()))
def test_a_member_starts_from_its_solo_weights_and_trains_like_it(shape):
    cfgs = [TrainConfig(**BASE, **shape, **m) for m in MEMBERS]
    packed, solo = train_pack(cfgs), [train(c) for c in cfgs]
    for p, s in zip(packed, solo):
        for name in ("grad_norm", "act_std", "weight_grad_norm"):
            for a, b in zip(p.layers[0]["series"][name], s.layers[0]["series"][name]):
                assert a == pytest.approx(b, rel=1e-4), name
        assert p.status == s.status == "completed"
        assert p.summary["test_acc"] == pytest.approx(s.summary["test_acc"], abs=0.02)
        assert p.summary["grad_attenuation_final"] == pytest.approx(s.summary["grad_attenuation_final"], abs=0.05)
        assert len(p.layers) == len(s.layers) and len(p.history) == len(s.history) == 2


def test_a_diverging_member_leaves_the_others_bit_identical_to_a_pack_without_it():
    healthy = [TrainConfig(**BASE, activation="relu", **m) for m in MEMBERS[:2]]
    runaway = TrainConfig(**BASE, activation="relu", seed=3, lr=50.0, diverge_loss=20)
    with_it, without = train_pack(healthy + [runaway]), train_pack(healthy)
    assert with_it[2].status == "diverged" and with_it[2].summary["epochs_run"] == 1
    for a, b in zip(with_it, without):
        assert a.status == b.status == "completed"
        assert untimed(a.history) == untimed(b.history)  # == on floats: bit for bit
        assert a.layers == b.layers


def test_a_stopped_member_ends_while_the_pack_trains_on():
    cfgs = [TrainConfig(**BASE | {"epochs": 3}, activation="tanh", **m) for m in MEMBERS]
    seen = []

    def on_epoch(reports):
        seen.append(sorted(reports))
        return {1} if 1 in reports else set()
    results = train_pack(cfgs, on_epoch=on_epoch)
    assert seen == [[0, 1, 2], [0, 2], [0, 2]]
    assert [r.status for r in results] == ["completed", "stopped", "completed"]
    assert [r.summary["epochs_run"] for r in results] == [3, 1, 3]


def test_a_pack_resumes_from_its_members_checkpoints():
    cfgs = [TrainConfig(**BASE | {"epochs": 3}, activation="relu", norm="batch", **m) for m in MEMBERS[:2]]
    saved = {}

    def keep(reports):
        if 1 in reports and reports[1].metrics["epoch"] == 2:
            saved.update({k: torch.load(_roundtrip(r.state()), weights_only=False) for k, r in reports.items()})
    whole = train_pack(cfgs, on_epoch=keep)
    resumed = train_pack(cfgs, resume=[saved[0], saved[1]])
    for a, b in zip(whole, resumed):
        assert untimed(a.history) == untimed(b.history)


def _roundtrip(state):
    import io

    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return buf


def test_members_must_share_a_shape():
    with pytest.raises(ValueError, match="may differ only in init, init_scale, optimizer, lr"):
        train_pack([TrainConfig(**BASE), TrainConfig(**BASE | {"depth": 4})])
    with pytest.raises(ValueError, match="arch 'resnet_cifar' trains alone"):
        train_pack([TrainConfig(**BASE | {"depth": 8}, arch="resnet_cifar")] * 2)


def test_plan_packs_trials_of_one_shape_in_near_equal_parts():
    items = [{"train": TrainConfig(**BASE, activation=a, seed=s).to_dict(), "meta": {}}
             for a in ("relu", "tanh") for s in range(5)]
    items.append({"train": TrainConfig(**BASE | {"depth": 8}, arch="resnet_cifar").to_dict(), "meta": {}})
    planned = packing.plan(items, 3, slots=2)
    sizes = sorted(len(p.get("members", [p])) for p in planned)
    assert sizes == [1, 2, 2, 3, 3]  # 5 = 3 + 2 per activation; the resnet alone
    for p in planned:
        if "members" in p:
            assert len({m["train"]["activation"] for m in p["members"]}) == 1
    assert packing.plan(items, "off", 2) == items
    auto = packing.plan(items, "auto", slots=2)  # 10 packable trials, 2 slots: at most 2 per pack, 5 = 2 + 1 + 2
    assert sorted(len(p.get("members", [p])) for p in auto) == [1, 1, 1, 2, 2, 2, 2]


@pytest.mark.parametrize("value,message", [
    ("yes", "pack: must be off, auto or a number of trials per pack"),
    (0, "pack: must be off, auto or a number"),
    (True, "pack: must be off, auto or a number"),
    (2.5, "pack: must be off, auto or a number"),
])
def test_bad_pack_values_are_named(value, message):
    with pytest.raises(spec_mod.SpecError, match=message):
        spec_mod.parse({"name": "p", "pack": value, "parameters": {"seed": [0, 1]}})


def test_pack_refuses_asha_and_specs_with_nothing_to_pack():
    with pytest.raises(spec_mod.SpecError, match="pack: scheduler asha pauses and stops trials one by one"):
        spec_mod.parse({"name": "p", "pack": 4, "parameters": {"seed": [0, 1]}, "scheduler": {"type": "asha"}})
    with pytest.raises(spec_mod.SpecError, match="no trial of this spec can be packed"):
        spec_mod.parse({"name": "p", "pack": 4, "arch": "resnet_cifar", "parameters": {"seed": [0, 1]},
                        "fixed": {"depth": 8}})
    assert spec_mod.parse({"name": "p", "pack": False, "parameters": {"seed": [0, 1]}}).pack == "off"  # `off`


@pytest.mark.usefixtures("ray_cluster")
def test_a_packed_sweep_records_every_member_as_its_own_trial(tmp_path):
    raw = {"name": "packed", "dataset": {"name": "digits", "limit": 300},
           "parameters": {"activation": ["tanh", "sigmoid"], "seed": [0, 1, 2]},
           "fixed": {"width": 4, "depth": 8, "epochs": 3},
           "stop": {"gradient_collapse": True, "attenuation_floor": -2.5, "patience": 1}}
    outcomes = {}
    for mode in ("off", 3):
        uri = f"sqlite:///{tmp_path}/{mode}.db"
        options = SweepOptions(tracking_uri=uri, storage=str(tmp_path / "runs"), out=str(tmp_path / "out"),
                               verbose=0)
        outcome = run_sweep(spec_mod.parse(raw | {"pack": mode}), options)
        client = MlflowClient(uri)
        exp = client.get_experiment_by_name("packed")
        runs = client.search_runs([exp.experiment_id], "tags.`vgtune.role` = 'trial'")
        outcomes[mode] = (outcome, client, {(r.data.params["activation"], r.data.params["seed"]): r for r in runs})
    (_, _, solo_runs), (packed, client, packed_runs) = outcomes["off"], outcomes[3]
    assert len(packed.trials) == len(packed_runs) == 6 and packed.unfinished == 0
    assert set(packed_runs) == set(solo_runs)
    packs = {r.data.tags["vgtune.pack"] for r in packed_runs.values()}
    assert len(packs) == 2  # one pack per activation
    stopped = 0
    for key, run in packed_runs.items():
        alone = solo_runs[key]
        assert run.info.status == "FINISHED"
        assert run.data.tags["status"] == alone.data.tags["status"]
        assert run.data.tags["diagnosis"] == alone.data.tags["diagnosis"]
        assert run.data.tags["vgtune.trial_id"].startswith(run.data.tags["vgtune.pack"] + "-m")
        assert run.data.metrics["epochs_run"] == alone.data.metrics["epochs_run"]
        assert run.data.metrics["test_acc"] == pytest.approx(alone.data.metrics["test_acc"], abs=0.02)
        assert run.data.metrics["grad_attenuation_init"] == pytest.approx(
            alone.data.metrics["grad_attenuation_init"], rel=1e-4)
        assert [h.step for h in client.get_metric_history(run.info.run_id, "block01/grad_norm")] == \
            list(range(int(run.data.metrics["epochs_run"]) + 1))
        assert "gradient_flow.svg" in [a.path for a in client.list_artifacts(run.info.run_id)]
        if run.data.tags["status"] == "stopped":
            stopped += 1
            assert "gradient collapsed" in run.data.tags["vgtune.stop_reason"]
    assert stopped >= 1 and any(r.data.tags["status"] == "completed" for r in packed_runs.values())
    assert {t["last"]["status"] for t in packed.trials} <= {"completed", "running"}
    assert not math.isnan(packed.busy_share())
