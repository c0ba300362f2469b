"""The CUDA path of `vgtune.core.train`, measured on a GPU machine that has torch (no Ray, no MLflow).

    python -m bench.gpu            # about 4 minutes on one recent GPU
    python -m bench.gpu --smoke    # the same steps, tiny, on the CPU: checks the script itself

Prints, one line each:
1. he2016 epoch times: `arch: resnet_cifar` (depth 20 and 56, plain and residual, fp32 and bf16) on
   CIFAR-10-shaped data (a user loader, 40,000 training images of 3x32x32) with crop/flip augmentation,
   and what the README's He et al. recipe (8 trials x 205 epochs) costs at that speed;
2. probe overhead on CUDA: a 24-block width-8 CNN with probes on / off;
3. fractional-GPU trials: k processes training small trials on one GPU at once (what `resources.gpu: 1/k`
   lets Ray do), aggregate trials/s against one at a time;
4. a user factory (examples/mynet.py) trained on CUDA;
5. packing: packs of 4 and 16 trials (depth 12 and 24, width 8, BatchNorm) trained as one fused network
   against the same trials one at a time (bench/pack.py on CUDA), and a member's init probe and
   accuracy against its solo run's.

    python -m bench.gpu --only packing,user_model   # some steps (any of the names above)
"""

from __future__ import annotations

import json
import multiprocessing as mp
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))

from vgtune.core.train import TrainConfig, train  # noqa: E402

SMALL = dict(depth=24, width=8, activation="relu", init="kaiming_normal", norm="batch", epochs=3,
             dataset="synthetic", device="cuda", lr=0.02, threads=2)
SIZE = {"train": 40_000, "held_out": 5_000}  # CIFAR-10 with 5,000 of its training images held out for validation
SMOKE = "--smoke" in sys.argv
if SMOKE:
    SMALL |= {"device": "cpu", "depth": 4}
    SIZE |= {"train": 512, "held_out": 128}


def cifar_like(split_seed: int = 0):
    """CIFAR-10-shaped tensors: class prototypes plus noise (a user loader returning six tensors)."""
    g = torch.Generator().manual_seed(split_seed)
    protos = torch.randn(10, 3, 32, 32, generator=g)

    def split(n: int):
        y = torch.randint(0, 10, (n,), generator=g)
        return protos[y] + 2.0 * torch.randn(n, 3, 32, 32, generator=g), y
    return (*split(SIZE["train"]), *split(SIZE["held_out"]), *split(SIZE["held_out"]))


def _epoch_seconds(**kw) -> tuple[float, dict]:
    cfg = TrainConfig(arch="resnet_cifar", width=16, norm="batch", init="kaiming_normal", lr=0.1,
                      weight_decay=1e-4, batch_size=128, lr_schedule="step", augment="crop_flip",
                      dataset="bench.gpu:cifar_like", device=SMALL["device"], epochs=2, **kw)
    result = train(cfg)
    first, second = result.history
    return second["train_seconds"] - first["train_seconds"], result.summary  # the 2nd epoch: warm


def he2016() -> None:
    seconds = {}
    for depth in (20, 56):
        for residual in ("none", "standard"):
            for bf16 in (False, True):
                sec, summary = _epoch_seconds(depth=depth, residual=residual, bf16=bf16)
                seconds[depth, residual, bf16] = sec
                print(json.dumps({"he2016_epoch": {"depth": depth, "residual": residual, "bf16": bf16,
                                                   "epoch_s": round(sec, 2), "status": summary["status"],
                                                   "att_init": round(summary["grad_attenuation_init"], 3),
                                                   "val_acc": round(summary["val_acc"], 3)}}), flush=True)
    # sweeps/he2016.yaml: depths 20, 32, 44, 56 x {none, standard} x 205 epochs; 32 and 44 interpolated in depth
    for bf16 in (False, True):
        total = 0.0
        for residual in ("none", "standard"):
            t20, t56 = seconds[20, residual, bf16], seconds[56, residual, bf16]
            total += sum(t20 + (t56 - t20) * (d - 20) / 36 for d in (20, 32, 44, 56)) * 205
        print(json.dumps({"he2016_recipe_gpu_hours_one_trial_at_a_time": {"bf16": bf16,
                                                                          "hours": round(total / 3600, 2)}}),
              flush=True)


def probe_overhead() -> None:
    times = {}
    for probes in (True, False):
        cfg = TrainConfig(**(SMALL | {"epochs": 4, "probes": probes, "probe_every": 0}))
        train(cfg)  # warm
        t0 = time.perf_counter()
        result = train(cfg)
        times[probes] = (time.perf_counter() - t0, result.summary["train_seconds"])
    print(json.dumps({"cuda_probe_overhead_train_loop": round(times[True][1] / times[False][1], 3),
                      "cuda_probe_overhead_whole_trial": round(times[True][0] / times[False][0], 3)}), flush=True)


def _worker(n: int, barrier, queue) -> None:
    train(TrainConfig(**(SMALL | {"epochs": 1})))  # warm this process (CUDA context, kernels)
    barrier.wait()
    t0 = time.perf_counter()
    for seed in range(n):
        train(TrainConfig(**(SMALL | {"seed": seed})))
    queue.put(time.perf_counter() - t0)


def fractional(trials: int = 6) -> None:
    ctx = mp.get_context("spawn")
    rates = {}
    for k in (1, 2, 4, 8):
        queue, barrier = ctx.Queue(), ctx.Barrier(k)
        procs = [ctx.Process(target=_worker, args=(trials, barrier, queue)) for _ in range(k)]
        for p in procs:
            p.start()
        wall = max(queue.get() for _ in range(k))
        for p in procs:
            p.join()
        rates[k] = k * trials / wall
        print(json.dumps({"fractional_gpu": {"processes": k, "trials_per_s": round(rates[k], 2),
                                             "vs_one": round(rates[k] / rates[1], 2)}}), flush=True)


def user_model() -> None:
    cfg = TrainConfig(model="mynet:build", dataset="mydata:load", depth=10, width=8, norm="batch",
                      model_args={"head_dropout": 0.1}, epochs=3, batch_size=32, device=SMALL["device"])
    result = train(cfg)
    print(json.dumps({"user_model_cuda": {"status": result.status, "test_acc": round(result.summary["test_acc"], 3),
                                          "att_init": round(result.summary["grad_attenuation_init"], 3)}}),
          flush=True)


def packing() -> None:
    from bench.pack import measure

    sizes = (4,) if SMOKE else (4, 16)
    for depth in ((4,) if SMOKE else (12, 24)):
        for size in sizes:
            m = measure(depth, size, device=SMALL["device"], dataset="synthetic", norm="batch", threads=2)
            print(json.dumps({"packing": {"depth": depth, "trials": size, "solo_s": round(m["solo_s"], 2),
                                          "packed_s": round(m["pack_s"], 2), "whole_x": round(m["whole"], 2),
                                          "train_loop_x": round(m["loop"], 2),
                                          "max_test_acc_gap": round(m["acc_diff"], 4),
                                          "init_probe_rel_gap": float(f"{m['init_rel']:.2e}")}}), flush=True)
    if torch.cuda.is_available():
        print(json.dumps({"packing_cuda_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)}),
              flush=True)


STEPS = {"user_model": user_model, "packing": packing, "probe_overhead": probe_overhead, "he2016": he2016,
         "fractional": fractional}


def _chosen() -> list:
    names = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--only=")), None)
    if "--only" in sys.argv:
        names = sys.argv[sys.argv.index("--only") + 1]
    if names is None:
        return list(STEPS.values())
    unknown = [n for n in names.split(",") if n not in STEPS]
    if unknown:
        raise SystemExit(f"unknown step(s) {', '.join(unknown)}; valid: {', '.join(STEPS)}")
    return [STEPS[n] for n in names.split(",")]


def main() -> None:
    print(json.dumps({"torch": torch.__version__, "cuda": torch.cuda.is_available(),
                      "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}), flush=True)
    if not torch.cuda.is_available() and not SMOKE:
        print("no CUDA device: nothing to measure (--smoke runs the steps on the CPU)")
        return
    for step in _chosen():
        t0 = time.perf_counter()
        try:
            step()
        except Exception as exc:  # report and go on: one failing part must not hide the others
            print(json.dumps({step.__name__: f"failed: {type(exc).__name__}: {exc}"}), flush=True)
        print(json.dumps({f"{step.__name__}_seconds": round(time.perf_counter() - t0, 1)}), flush=True)


if __name__ == "__main__":
    main()
