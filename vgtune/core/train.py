"""Trials as plain PyTorch: data -> model -> the epoch loop -> metrics.

    result = train(TrainConfig(depth=20, activation="sigmoid"))
    result.summary["grad_attenuation_init"]   # about -16.5: vanishing

One epoch loop trains every trial: a trial that trains alone is a pack of one.
The loop trains a `Network` whose forward returns each member's logits
(M, B, classes): for one member its own model (`Solo`, any architecture), for a
pack the fused network of `vgtune.core.fused`. Everything else (set-up, the
init probe, evaluation, the epoch's record, the final probe) is each member's own.

No Ray and no MLflow below this module. `on_epoch` receives an `EpochReport`
after every epoch (metrics plus a lazy checkpoint), which is how
`vgtune.driver.trainable` talks to Ray Tune; `resume` continues from such a checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from vgtune.core import checks, fused, networks, theory
from vgtune.core import data as data_mod
from vgtune.core.columns import THEORY
from vgtune.core.diagnosis import Thresholds, diagnose
from vgtune.core.gradflow import GradFlowProbe, mean_series, summarize
from vgtune.core.member import MemberEpoch
from vgtune.core.models import ModelConfig, get_activation, get_init, init_weights
from vgtune.core.schema import OPTIMIZERS, RUNNING, STATUSES, TrainConfig


def data_config(cfg: TrainConfig) -> data_mod.DataConfig:
    return data_mod.DataConfig(dataset=cfg.dataset, root=cfg.root, download=cfg.download,
                               image_size=cfg.image_size, limit=cfg.limit, split_seed=cfg.split_seed,
                               max_gb=cfg.max_gb, val_seed=cfg.seed if cfg.split == "per_seed" else None)


def validate(cfg: TrainConfig) -> None:
    """`TrainConfig.validate`, plus the registered names: network (arch or factory), init and dataset.

    OptionError naming the option. The spec calls it once per trial on the driver; `train` and `probe` call it
    for a TrainConfig built in Python (not for the spec's trials: `checked=True`)."""
    cfg.validate()
    networks.validate(model_config(cfg))
    get_init(cfg.init)
    data_mod.get_loader(cfg.dataset)


def model_config(cfg: TrainConfig, input_shape: tuple[int, int, int] = (1, 8, 8),
                 num_classes: int = 10) -> ModelConfig:
    return ModelConfig(depth=cfg.depth, width=cfg.width, kernel_size=cfg.kernel_size, activation=cfg.activation,
                       norm=cfg.norm, residual=cfg.residual, pool=cfg.pool, dropout=cfg.dropout,
                       in_channels=input_shape[0], image_size=input_shape[1], num_classes=num_classes,
                       arch=cfg.arch, model=cfg.model, model_args=dict(cfg.model_args), probe=cfg.probe)


@dataclass
class EpochReport:
    """What `on_epoch` gets after each epoch."""

    metrics: dict[str, Any]  # epoch, train_loss, ..., grad_attenuation, diagnosis, status
    layers: dict[str, list[float]] | None  # per-block series of the epoch's last probe
    summary: dict[str, Any]  # the trial's summary so far (grad_attenuation_init, train_seconds)
    final: bool  # no epoch follows this one (last epoch, or diverged)
    init_layers: dict[str, list[float]] | None  # per-block series at initialization (first epoch only)
    state: Callable[[], dict[str, Any]]  # checkpoint for `train(..., resume=...)`; live tensors: save or copy it
    seconds: float = 0.0  # this epoch's training and evaluation seconds

    def as_member(self, index: int) -> MemberEpoch:
        """The epoch as member `index` of its trial reports it: the row, the init attenuation, the probes
        (with the first epoch: the init probe and the prediction for initialization)."""
        metrics = dict(self.metrics)
        if "grad_attenuation_init" in self.summary:
            metrics["grad_attenuation_init"] = self.summary["grad_attenuation_init"]
        if self.metrics["epoch"] == 1:
            metrics |= {k: self.summary[k] for k in THEORY if k in self.summary}
        return MemberEpoch(index, metrics, self.layers, self.init_layers, self.seconds)


@dataclass
class TrialResult:
    config: dict[str, Any]  # the TrainConfig as a dict
    status: str = "completed"  # one of STATUSES
    diagnosis: str = "healthy"  # one of vgtune.core.diagnosis.DIAGNOSES
    history: list[dict[str, float]] = field(default_factory=list)  # one row per epoch
    layers: list[dict[str, Any]] = field(default_factory=list)  # probes: step, epoch, per-block series
    summary: dict[str, Any] = field(default_factory=dict)  # the result columns of vgtune.core.columns.RESULTS
    error: str | None = None  # why the trial ended early, if it did

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise checks.keyed("device", f"{name!r} requested but CUDA is not available; use device=cpu or auto")
    return device


@dataclass
class Setup:
    """One trial ready to train: what `setup` returns."""

    cfg: TrainConfig
    device: torch.device
    data: data_mod.TensorData
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    probe: GradFlowProbe
    generator: torch.Generator  # batch order (CPU generator, permutation moved to device)
    augment_generator: torch.Generator  # crops and flips, apart from the batch order
    eval_x: torch.Tensor  # validation then test examples, evaluated in one pass
    eval_y: torch.Tensor
    prediction: theory.Prediction  # the mean-field gradient flow at init (vgtune.core.theory)
    chance: tuple[float, float]  # (val, test) score of a diverged network: each split's majority-class share

    def autocast(self):
        if self.cfg.bf16 and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()


def setup(cfg: TrainConfig, thresholds: Thresholds | None = None) -> Setup:
    """Data on the device, a seeded and initialized model, its optimizer and probe.

    The probe counts saturated units with `thresholds.saturation_eps`. Trusts `cfg` (see `validate`).
    """
    thresholds = thresholds or Thresholds()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    cuda = device.type == "cuda"
    fmt = torch.channels_last if (cuda and cfg.channels_last) else torch.contiguous_format
    data = data_mod.load(data_config(cfg)).to(device, memory_format=fmt)
    torch.manual_seed(cfg.seed)
    mcfg = model_config(cfg, data.input_shape, data.num_classes)
    model = networks.create(mcfg)
    blocks = networks.probe_blocks(model, mcfg.probe)
    model.to(device=device, memory_format=fmt)
    init_weights(model, cfg.init, sample=data.x_train[:256], scale=cfg.init_scale, activation=cfg.activation)
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen, aug = torch.Generator().manual_seed(cfg.seed), torch.Generator().manual_seed(cfg.seed + 2)
    eval_x, eval_y = torch.cat([data.x_val, data.x_test]), torch.cat([data.y_val, data.y_test])
    probe = GradFlowProbe(model, cfg.activation, thresholds.saturation_eps, blocks=blocks)
    return Setup(cfg, device, data, model, opt, probe, gen, aug, eval_x, eval_y, predict_init(cfg, model, data),
                 (majority_share(data.y_val), majority_share(data.y_test)))


def majority_share(y: torch.Tensor) -> float:
    """The accuracy of always answering the commonest class: the score of a network that has no answer."""
    return float(torch.bincount(y.cpu()).max()) / max(1, len(y))


def predict_init(cfg: TrainConfig, model: torch.nn.Module, data: data_mod.TensorData) -> theory.Prediction:
    """Mean-field theory's gradient flow for this configuration, or why it has none."""
    reason = theory.why_no_theory(cfg.norm, cfg.residual, cfg.pool, cfg.dropout, cfg.model or cfg.arch)
    if reason is not None:
        return theory.not_applicable(reason)
    return theory.predict(model, data.x_train[:256].cpu(), get_activation(cfg.activation), data.input_shape[1])


def _loss(s: Setup, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with s.autocast():
        logits = s.model(x)
    return F.cross_entropy(logits.float(), y), logits


def measure_init(s: Setup, batches: int) -> list[dict[str, list[float]]]:
    """Gradient-flow probes of `batches` batches, weights untouched (before any update; `final_probe` after
    the last: the same batches)."""
    records = []
    gen = torch.Generator().manual_seed(s.cfg.seed + 1)
    stream = data_mod.train_batches(s.data.x_train, s.data.y_train, s.cfg.batch_size, gen)
    for _, (x, y) in zip(range(batches), stream):
        with s.probe.capture():
            loss, _ = _loss(s, x, y)
            loss.backward()
        records.append(s.probe.read())
        s.model.zero_grad(set_to_none=True)
    return records


@torch.no_grad()
def evaluate(s: Setup, batch_size: int = 1024) -> tuple[float, float]:
    """(val_acc, test_acc) in one pass over the concatenated splits."""
    s.model.eval()
    n_val = s.data.x_val.shape[0]
    hits = []
    for xb, yb in data_mod.eval_batches(s.eval_x, s.eval_y, batch_size):
        with s.autocast():
            hits.append(s.model(xb).argmax(dim=1) == yb)
    s.model.train()
    hits_t = torch.cat(hits)
    val, test = hits_t[:n_val].sum(), hits_t[n_val:].sum()
    counts = torch.stack([val, test]).tolist()  # one host sync
    return counts[0] / max(1, n_val), counts[1] / max(1, s.data.x_test.shape[0])


def _state(s: Setup, result: TrialResult, epoch: int) -> dict[str, Any]:
    # References to the live tensors, not copies (a deep copy of a 24-block model costs
    # more than saving it): serialize before training continues.
    return {
        "epoch": epoch,
        "model": s.model.state_dict(),
        "optimizer": s.optimizer.state_dict(),
        "generator": s.generator.get_state(),
        "augment_generator": s.augment_generator.get_state(),
        "torch_rng": torch.get_rng_state(),
        "result": result.to_dict(),
    }


def _restore(s: Setup, state: dict[str, Any]) -> tuple[TrialResult, int]:
    s.model.load_state_dict(state["model"])
    s.optimizer.load_state_dict(state["optimizer"])
    s.generator.set_state(state["generator"])
    if "augment_generator" in state:
        s.augment_generator.set_state(state["augment_generator"])
    torch.set_rng_state(state["torch_rng"])
    return TrialResult(**state["result"]), state["epoch"]


def finish(result: TrialResult, thresholds: Thresholds) -> TrialResult:
    last = result.history[-1] if result.history else {}
    final_probe = result.layers[-1]["series"] if result.layers else None
    final = summarize(final_probe) if final_probe else {}
    att_final = final.get("grad_attenuation", math.nan)
    if final and result.status != "diverged" and math.isnan(att_final):
        result.status = "diverged"  # a non-finite gradient is a runaway one
        result.error = result.error or "non-finite gradient"
    if final or result.status == "diverged":
        result.diagnosis = diagnose(result.status, att_final, final.get("dead_frac", 0.0),
                                    final.get("saturated_frac", 0.0), thresholds)
    # A network that ran away scores chance, never its output: record_epoch did so for a runaway loss; here too
    # for a non-finite final gradient found just above, whose last epoch had been evaluated.
    if result.status == "diverged":
        last = last | {"val_acc": result.summary.get("chance_val_acc", math.nan),
                       "test_acc": result.summary.get("chance_acc", math.nan)}
    result.summary.update({
        "test_acc": last.get("test_acc", math.nan),
        "val_acc": last.get("val_acc", math.nan),
        "train_loss": last.get("train_loss", math.nan),
        "grad_attenuation_final": att_final,
        "dead_frac": final.get("dead_frac", math.nan),
        "saturated_frac": final.get("saturated_frac", math.nan),
        "epochs_run": len(result.history),
        "status": result.status,
        "diagnosis": result.diagnosis,
    })
    return result


def record_init(result: TrialResult, records: list[dict[str, list[float]]]) -> None:
    series = mean_series(records)
    series["update_ratio"] = [math.nan] * len(series["update_ratio"])  # no update yet
    result.layers.insert(0, {"step": 0, "epoch": 0, "series": series})
    result.summary["grad_attenuation_init"] = summarize(series)["grad_attenuation"]


@dataclass
class EpochPass:
    """What one pass over the training split produced."""

    train_loss: float  # mean over the steps (non-finite if it diverged)
    train_acc: float  # on the training batches, as they were trained
    series: dict[str, list[float]] | None  # the epoch's last regular probe
    seconds: float  # inside the training loop


def lr_at(cfg: TrainConfig, epoch: int) -> float:
    """The learning rate of `epoch` (1-based) under cfg.lr_schedule."""
    if cfg.lr_schedule == "step":
        milestones = (math.ceil(0.5 * cfg.epochs), math.ceil(0.75 * cfg.epochs))
        return cfg.lr * 0.1 ** sum(epoch > m for m in milestones)
    if cfg.lr_schedule == "cosine":
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * (epoch - 1) / cfg.epochs))
    return cfg.lr


def set_lr(s: Setup, epoch: int) -> None:
    """The optimizer's learning rate for `epoch` (cfg.lr_schedule)."""
    for group in s.optimizer.param_groups:
        group["lr"] = lr_at(s.cfg, epoch)


def epoch_batches(s: Setup) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of the trial's training batches: its own order, augmented as cfg.augment says."""
    for xb, yb in data_mod.train_batches(s.data.x_train, s.data.y_train, s.cfg.batch_size, s.generator):
        if s.cfg.augment == "crop_flip":
            xb = data_mod.crop_flip(xb, s.augment_generator)
        yield xb, yb


def diverged(cfg: TrainConfig, train_loss: float) -> bool:
    """A non-finite training loss, or one above cfg.diverge_loss."""
    return not math.isfinite(train_loss) or train_loss > cfg.diverge_loss


def final_probe(s: Setup, result: TrialResult, ep: EpochPass) -> None:
    """The last epoch's probe, averaged as the init probe is: with init_probe_batches - 1 more batches.

    Runs after the last update and its evaluation, and updates nothing (a BatchNorm net's running
    statistics move with the batches, as at init); the update ratio stays the training step's.
    """
    if ep.series is None or s.cfg.init_probe_batches < 2:
        return
    series = mean_series([ep.series] + measure_init(s, s.cfg.init_probe_batches - 1))
    series["update_ratio"] = ep.series["update_ratio"]
    if result.layers and result.layers[-1]["series"] is ep.series:
        result.layers[-1]["series"] = series
    ep.series = series


def evaluate_epoch(s: Setup, result: TrialResult, epoch: int, ep: EpochPass) -> tuple[float, float, float]:
    """(val_acc, test_acc, eval_seconds) of an epoch; after the last one, the final probe too (`final_probe`, its
    seconds counted with the evaluation's). A pass that diverged gets the chance scores, unevaluated."""
    if diverged(s.cfg, ep.train_loss):
        return (*s.chance, 0.0)
    t0 = time.perf_counter()
    val_acc, test_acc = evaluate(s)
    if epoch == s.cfg.epochs:
        final_probe(s, result, ep)
    return val_acc, test_acc, time.perf_counter() - t0


@dataclass
class Run:
    """One trial's state between epochs (the pack trainer keeps one per member)."""

    result: TrialResult
    start: int  # epochs already done (a resumed run)
    totals: dict[str, float]  # train_seconds, eval_seconds, setup_seconds so far
    latest: dict[str, float] = field(default_factory=dict)  # summary of the most recent probe
    init_records: list[dict[str, list[float]]] | None = None  # init probes awaiting the first training step


def begin(s: Setup, resume: dict[str, Any] | None, t0: float) -> Run:
    """A fresh run (with its extra init-probe batches) or one restored from `resume`; t0 = when set-up began.

    grad_attenuation_init averages init_probe_batches batches before the first
    update: init_probe_batches - 1 extra ones and the first training step itself.
    """
    init_records = None
    if resume is not None:
        result, start = _restore(s, resume)
    else:
        result, start = TrialResult(config=s.cfg.to_dict()), 0
        result.summary.update(s.prediction.as_dict())
        result.summary["chance_val_acc"], result.summary["chance_acc"] = s.chance
        if s.cfg.probes:
            init_records = measure_init(s, s.cfg.init_probe_batches - 1)
    totals = {"train_seconds": result.summary.get("train_seconds", 0.0),  # inside the training loops
              "eval_seconds": result.summary.get("eval_seconds", 0.0),  # per-epoch validation and test passes
              # data, model, optimizer and the extra init-probe batches (once per start)
              "setup_seconds": result.summary.get("setup_seconds", 0.0) + time.perf_counter() - t0}
    return Run(result, start, totals, init_records=init_records)


def record_epoch(s: Setup, run: Run, epoch: int, ep: EpochPass, accs: tuple[float, float, float],
                 thresholds: Thresholds) -> EpochReport:
    """Add one epoch (its pass `ep`, its evaluation `accs`) to the run; the report `on_epoch` gets."""
    cfg, result = s.cfg, run.result
    if ep.series is not None:
        run.latest = summarize(ep.series)
    runaway = diverged(cfg, ep.train_loss)
    status = "diverged" if runaway else ("completed" if epoch == cfg.epochs else RUNNING)
    val_acc, test_acc, eval_seconds = (*s.chance, accs[2]) if runaway else accs  # never a broken network's score
    row = {"epoch": epoch, "train_loss": ep.train_loss, "train_acc": ep.train_acc, "val_acc": val_acc,
           "test_acc": test_acc, "chance_acc": s.chance[1], "chance_val_acc": s.chance[0],
           "eval_seconds": eval_seconds, **run.latest,
           "status": status}
    if run.latest or runaway:  # a runaway network is `diverged`, whether or not this epoch was probed
        row["diagnosis"] = diagnose(status, run.latest.get("grad_attenuation", math.nan),
                                    run.latest.get("dead_frac", 0.0), run.latest.get("saturated_frac", 0.0),
                                    thresholds)
    run.totals["train_seconds"] += ep.seconds
    run.totals["eval_seconds"] += eval_seconds
    row.update(run.totals)
    result.history.append(row)
    result.summary.update(run.totals)
    if runaway:
        result.status = "diverged"
        result.error = f"training loss {ep.train_loss:.3g} at epoch {epoch} (limit {cfg.diverge_loss:g})"
    init_layers = result.layers[0]["series"] if epoch == 1 and result.layers else None
    return EpochReport(metrics=row, layers=ep.series, summary=result.summary, final=status != RUNNING,
                       init_layers=init_layers, state=lambda e=epoch: _state(s, result, e),
                       seconds=ep.seconds + eval_seconds)


def ends(run: Run, report: EpochReport, stop: bool | None) -> bool:
    """Whether the trial ends after this epoch: it diverged, was told to stop (status 'stopped') or is done."""
    if report.metrics["status"] == "diverged":
        return True
    if stop:
        run.result.status = "stopped"
        return True
    return report.final


class Network(Protocol):
    """What the epoch loop trains: the live members' models as one network."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x: member k's batch in channels [k C_in, (k+1) C_in) -> logits (M, B, classes)."""

    def set_members(self, models: list[torch.nn.Module]) -> None:
        """Train these members' models from now on (the live ones)."""

    def capture(self, probes: list[GradFlowProbe]) -> AbstractContextManager:
        """One probed step: member k's probe (probes[k]) records its own blocks."""

    def count_steps(self, steps: int) -> None:
        """After an epoch of `steps` steps: advance what the members' own forward would have counted."""


class Solo:
    """One member's own model as the loop's network (any architecture: cnn, resnet_cifar, a user's model)."""

    def __init__(self, models: list[torch.nn.Module]):
        self.model: torch.nn.Module  # the one member's model
        self.set_members(models)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).unsqueeze(0)

    def set_members(self, models: list[torch.nn.Module]) -> None:
        if len(models) != 1:
            raise ValueError(f"a solo network trains one member, not {len(models)}")
        self.model = models[0]

    def capture(self, probes: list[GradFlowProbe]) -> AbstractContextManager:
        return probes[0].capture()

    def count_steps(self, steps: int) -> None:
        """Nothing: the model's own BatchNorm layers count their steps."""


@dataclass
class Member:
    """One trial of a pack (a trial that trains alone: a pack of one)."""

    index: int  # position in the pack
    s: Setup  # its own model, optimizer, generators and probe
    run: Run  # its result and bookkeeping between epochs
    ended: bool = False  # diverged, stopped or done: it trains no more


def member_losses(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Each member's mean cross-entropy over its batch, (M,), from logits (M, B, classes) and labels (M, B).

    One member's is computed as `F.cross_entropy` computes a single model's: the batched form's
    mean (reduction 'none', then `mean`) can differ from it in the last bit.
    """
    if logits.shape[0] == 1:
        return F.cross_entropy(logits[0].float(), y[0]).unsqueeze(0)
    losses = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), reduction="none")
    return losses.view(logits.shape[0], -1).mean(dim=1)


def _train_epoch(net: Network, live: list[Member], epoch: int, steps: int,
                 probe_every: int) -> dict[int, EpochPass]:
    """One pass of the members over their own batches; a member whose probed loss diverges leaves the
    network for the rest of the epoch. Probes only on probed steps (the first step of a fresh run
    completes the init probe)."""
    cfg, t0, device = live[0].s.cfg, time.perf_counter(), live[0].s.device
    for m in live:
        set_lr(m.s, epoch)
    active = list(live)
    loss_sum = torch.zeros(len(active), device=device)
    correct = torch.zeros(len(active), device=device)
    done: dict[int, tuple[float, float]] = {}  # members that left: (loss sum, correct)
    series: dict[int, dict[str, list[float]]] = {}
    streams = {m.index: epoch_batches(m.s) for m in live}
    for i in range(steps):
        step = (epoch - 1) * steps + i + 1
        batches = [next(streams[m.index]) for m in active]
        x = batches[0][0] if len(batches) == 1 else torch.cat([xb for xb, _ in batches], dim=1)
        y = batches[0][1].unsqueeze(0) if len(batches) == 1 else torch.stack([yb for _, yb in batches])  # (M, B)
        pending = any(m.run.init_records is not None for m in active)
        probing = cfg.probes and (step % probe_every == 0 or pending)
        with net.capture([m.s.probe for m in active]) if probing else contextlib.nullcontext():
            with live[0].s.autocast():
                logits = net(x)
            losses = member_losses(logits, y)
            for m in active:
                m.s.optimizer.zero_grad(set_to_none=True)
            losses.sum().backward()
        if probing:
            for m in active:
                m.s.probe.snapshot()
        for m in active:
            m.s.optimizer.step()
        loss_sum += losses.detach()  # stays on the device: no sync between probes
        correct += (logits.detach().argmax(dim=2) == y).sum(dim=1)
        if not probing:
            continue
        series |= _read_probes(active, step, epoch, probe_every)
        values = losses.tolist()  # a probed step syncs anyway
        keep = [k for k, (m, v) in enumerate(zip(active, values)) if not diverged(m.s.cfg, v)]
        if len(keep) < len(active):
            sums, hits = loss_sum.tolist(), correct.tolist()
            done |= {m.index: (sums[k], hits[k]) for k, m in enumerate(active) if k not in keep}
            active = [active[k] for k in keep]
            if not active:
                break
            idx = torch.tensor(keep, device=device)
            loss_sum, correct = loss_sum[idx], correct[idx]
            net.set_members([m.s.model for m in active])
    seconds = (time.perf_counter() - t0) / len(live)  # each member's share of the loop
    sums, hits = loss_sum.tolist(), correct.tolist()
    done |= {m.index: (sums[k], hits[k]) for k, m in enumerate(active)}
    net.count_steps(steps)
    return {m.index: EpochPass(done[m.index][0] / steps, done[m.index][1] / (steps * cfg.batch_size),
                               series.get(m.index), seconds) for m in live}


def _read_probes(active: list[Member], step: int, epoch: int, probe_every: int) -> dict[int, dict]:
    """Each member's probe of this step: completes its init probe, and is its epoch series on a regular one."""
    series = {}
    for m in active:
        probed = m.s.probe.read()
        if m.run.init_records is not None:
            record_init(m.run.result, m.run.init_records + [probed])
            m.run.init_records = None
        if step % probe_every == 0:
            series[m.index] = probed
            m.run.result.layers.append({"step": step, "epoch": epoch, "series": probed})
    return series


def _member(index: int, cfg: TrainConfig, resume: dict[str, Any] | None, thresholds: Thresholds) -> Member:
    """A member set up, fresh or from its checkpoint; one resumed after it ended trains no more."""
    t0 = time.perf_counter()
    s = setup(cfg, thresholds)
    run = begin(s, resume, t0)
    ended = resume is not None and (run.result.status != "completed" or run.start >= cfg.epochs)
    return Member(index, s, run, ended=ended)


def _network(members: list[Member]) -> Network:
    """One member: its own model; more: their fused network."""
    models = [m.s.model for m in members]
    return Solo(models) if len(models) == 1 else fused.FusedCNN(models)


def train_pack(cfgs: list[TrainConfig],
               on_epoch: Callable[[dict[int, EpochReport]], set[int] | None] | None = None,
               resume: list[dict[str, Any] | None] | None = None,
               thresholds: Thresholds | None = None, checked: bool = False) -> list[TrialResult]:
    """Train `cfgs` as one pack; one TrialResult per member, in order. Never raises for a diverging member.

    One config trains alone (any network); more must share a shape (vgtune.core.packing.PER_MEMBER)
    and train as one fused network. `on_epoch` gets each epoch's reports of the members that
    trained in it (by index) and may return the indices of members to stop (status 'stopped');
    `resume` is one checkpoint (`EpochReport.state`) per member. Each config is validated first (an
    OptionError names a bad option) unless `checked`: a spec's trials were, once, on the driver.
    """
    if not checked:
        for cfg in cfgs:
            validate(cfg)
    if len(cfgs) > 1:
        fused.check(cfgs)
    thresholds = thresholds or Thresholds()
    members = [_member(k, cfg, resume[k] if resume else None, thresholds) for k, cfg in enumerate(cfgs)]
    live = [m for m in members if not m.ended]
    if live:
        _epochs(_network(live), live, on_epoch, thresholds)
    return [finish(m.run.result, thresholds) for m in members]


def _epochs(net: Network, live: list[Member], on_epoch: Callable[[dict[int, EpochReport]], set[int] | None] | None,
            thresholds: Thresholds) -> None:
    """THE epoch loop: train, evaluate and record each epoch until every member has ended."""
    cfg = live[0].s.cfg
    steps = max(1, live[0].s.data.x_train.shape[0] // cfg.batch_size)
    probe_every = cfg.probe_every or steps
    for epoch in range(live[0].run.start + 1, cfg.epochs + 1):
        net.set_members([m.s.model for m in live])
        passes = _train_epoch(net, live, epoch, steps, probe_every)
        # Evaluation (and the last epoch's final probe) runs member by member, on each member's own
        # modules: on CPU one fused pass over large evaluation batches is slower than M separate ones.
        accs = {m.index: evaluate_epoch(m.s, m.run.result, epoch, passes[m.index]) for m in live}
        reports = {m.index: record_epoch(m.s, m.run, epoch, passes[m.index], accs[m.index], thresholds)
                   for m in live}
        stops = (on_epoch(reports) if on_epoch is not None else None) or set()
        for m in live:
            m.ended = ends(m.run, reports[m.index], m.index in stops)
        live = [m for m in live if not m.ended]
        if not live:
            return


def train(cfg: TrainConfig, on_epoch: Callable[[EpochReport], bool | None] | None = None,
          resume: dict[str, Any] | None = None, thresholds: Thresholds | None = None,
          checked: bool = False) -> TrialResult:
    """Train one configuration: a pack of one (`train_pack`); never raises for a diverging run (status 'diverged').

    `on_epoch` may return True to stop the trial early (status 'stopped'); `checked` as in `train_pack`.
    """
    def stops(reports: dict[int, EpochReport]) -> set[int]:
        return {0} if on_epoch is not None and on_epoch(reports[0]) else set()
    return train_pack([cfg], stops, [resume] if resume is not None else None, thresholds, checked)[0]


def probe(cfg: TrainConfig, thresholds: Thresholds | None = None, checked: bool = False) -> dict[str, Any]:
    """Gradient flow at initialization only: no update is made (`thresholds`, `checked` as in `train`)."""
    if not checked:
        validate(cfg)
    s = setup(cfg, thresholds)
    series = mean_series(measure_init(s, cfg.init_probe_batches))
    summary = summarize(series) | s.prediction.as_dict()
    summary["diagnosis"] = diagnose("completed", summary["grad_attenuation"], summary["dead_frac"],
                                    summary["saturated_frac"], thresholds)
    return {"config": cfg.to_dict(), "summary": summary, "series": series}


__all__ = ["TrainConfig", "TrialResult", "EpochReport", "EpochPass", "Setup", "Run", "Member", "Network", "Solo",
           "train", "train_pack", "member_losses", "probe", "setup",
           "evaluate", "evaluate_epoch", "final_probe", "diverged", "majority_share", "measure_init", "begin",
           "record_epoch", "ends", "finish", "record_init", "lr_at", "set_lr", "epoch_batches", "data_config",
           "model_config", "validate", "OPTIMIZERS", "STATUSES"]
