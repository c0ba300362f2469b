import copy
import json
import math

import pytest

from tests.helpers import untimed
from vgtune.core.train import TrainConfig, probe, train


def test_deep_plain_sigmoid_vanishes_at_init():
    assert probe(TrainConfig(depth=20, activation="sigmoid"))["summary"]["grad_attenuation"] < -5


@pytest.mark.parametrize("kw", [dict(activation="sigmoid", norm="batch"),
                                dict(activation="relu", init="kaiming_normal")])
def test_batchnorm_and_kaiming_keep_gradients_flowing(kw):
    assert probe(TrainConfig(depth=20, **kw))["summary"]["grad_attenuation"] > -2


def test_shallow_relu_kaiming_learns_digits():
    r = train(TrainConfig(depth=3, activation="relu", init="kaiming_normal", epochs=4))
    assert r.status == "completed" and r.diagnosis == "healthy"
    assert r.summary["test_acc"] >= 0.85


def test_deep_plain_sigmoid_stays_near_chance():
    r = train(TrainConfig(depth=20, width=8, activation="sigmoid", epochs=3))
    assert r.summary["test_acc"] < 0.2
    assert r.diagnosis == "vanishing"
    assert r.summary["grad_attenuation_init"] < -5 and r.summary["grad_attenuation_final"] < -5


def test_same_seed_same_metrics():
    cfg = TrainConfig(depth=3, width=8, epochs=2, dropout=0.1, seed=7)
    a, b = train(cfg), train(cfg)
    assert untimed(a.history) == untimed(b.history) and json.dumps(a.layers) == json.dumps(b.layers)  # NaN-safe


def test_different_seed_different_metrics():
    a = train(TrainConfig(depth=3, width=8, epochs=1, seed=1))
    b = train(TrainConfig(depth=3, width=8, epochs=1, seed=2))
    assert a.history[0]["train_loss"] != b.history[0]["train_loss"]


def test_divergence_ends_the_trial_and_keeps_history():
    r = train(TrainConfig(depth=6, width=8, activation="relu", init="kaiming_normal", lr=50.0, epochs=4))
    assert r.status == "diverged" and r.diagnosis == "diverged"
    assert r.history and r.error and "training loss" in r.error
    last = r.history[-1]
    assert not math.isfinite(last["train_loss"]) or last["train_loss"] > 1e4  # the epoch that diverged...
    assert all(math.isfinite(h["train_loss"]) and h["train_loss"] <= 1e4 for h in r.history[:-1])
    assert r.summary["epochs_run"] == last["epoch"]  # ...is the last one run


def test_history_and_layer_series_shape():
    r = train(TrainConfig(depth=4, width=8, epochs=2))
    assert [h["epoch"] for h in r.history] == [1, 2]
    assert r.layers[0]["epoch"] == 0 and len(r.layers) == 3  # init + one probe per epoch
    assert all(len(v) == 4 for v in r.layers[-1]["series"].values())
    for key in ("test_acc", "val_acc", "train_loss", "grad_attenuation_init", "grad_attenuation_final",
                "train_seconds", "eval_seconds", "setup_seconds", "epochs_run"):
        assert key in r.summary
    assert 0 < r.summary["setup_seconds"] and 0 < r.summary["eval_seconds"] < r.summary["train_seconds"]


def test_on_epoch_can_stop_and_resume_continues():
    states = []

    def on_epoch(report):
        states.append(copy.deepcopy(report.state()))
        return report.metrics["epoch"] == 1

    cfg = TrainConfig(depth=3, width=8, epochs=3)
    stopped = train(cfg, on_epoch=on_epoch)
    assert stopped.status == "stopped" and len(stopped.history) == 1 and stopped.summary["epochs_run"] == 1
    resumed = train(cfg, resume=states[0])
    full = train(cfg)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    assert resumed.history[-1]["train_loss"] == full.history[-1]["train_loss"]


@pytest.mark.parametrize("kw,message", [
    (dict(activation="relu6"), "unknown activation 'relu6'; valid: relu"),
    (dict(optimizer="rmsprop"), "unknown optimizer 'rmsprop'; valid: sgd, adam"),
    (dict(lr=-1.0), "lr must be a number > 0"),
    (dict(dataset="imagenet"), "unknown dataset 'imagenet'"),
    (dict(init="he"), "unknown init 'he'; valid: default, normal"),
])
def test_bad_options_raise_with_choices(kw, message):
    from vgtune.core.train import validate

    with pytest.raises(ValueError, match=message):
        validate(TrainConfig(**kw))


def test_from_dict_rejects_unknown_keys():
    with pytest.raises(ValueError, match="unknown training option.*depht.*valid: depth"):
        TrainConfig.from_dict({"depht": 3})


def test_step_schedule_divides_the_rate_by_ten_at_half_and_three_quarters():
    from vgtune.core.train import lr_at

    cfg = TrainConfig(epochs=8, lr=0.1, lr_schedule="step")
    assert [round(lr_at(cfg, e), 6) for e in range(1, 9)] == [0.1] * 4 + [0.01] * 2 + [0.001] * 2
    cos = TrainConfig(epochs=4, lr=0.1, lr_schedule="cosine")
    assert lr_at(cos, 1) == 0.1 and lr_at(cos, 3) == pytest.approx(0.05)
    assert lr_at(TrainConfig(lr=0.1), 5) == 0.1


def test_the_final_attenuation_averages_as_many_batches_as_the_initial_one():
    """The last probe = the last step's probe averaged with init_probe_batches - 1 batches of the final weights."""
    from vgtune.core.gradflow import attenuation, mean_series
    from vgtune.core.train import measure_init, setup

    base = dict(depth=6, width=8, activation="tanh", epochs=1, seed=3)
    single = train(TrainConfig(**base, init_probe_batches=1))  # the last step's probe alone
    saved = {}
    cfg = TrainConfig(**base, init_probe_batches=3)
    averaged = train(cfg, on_epoch=lambda r: saved.update(r.state()) if r.final else None)
    s = setup(cfg)
    s.model.load_state_dict(saved["model"])
    expected = mean_series([single.layers[-1]["series"]] + measure_init(s, 2))
    got = averaged.layers[-1]["series"]
    assert got["grad_norm"] == pytest.approx(expected["grad_norm"], rel=1e-6)
    assert got["grad_norm"] != pytest.approx(single.layers[-1]["series"]["grad_norm"], rel=1e-3)
    assert got["update_ratio"] == single.layers[-1]["series"]["update_ratio"]  # the training step's
    assert averaged.summary["grad_attenuation_final"] == pytest.approx(attenuation(expected["grad_norm"]))
    assert averaged.history[-1]["grad_attenuation"] == averaged.summary["grad_attenuation_final"]
