"""Which network a trial trains: a built-in architecture by name, or the user's own factory.

    model = create(ModelConfig(arch="resnet_cifar", depth=20, norm="batch"))
    blocks = probe_blocks(model)          # what vgtune.core.gradflow probes

A user factory (`model: mypkg.nets:build` in a spec) is called with the trial's
model factors as keywords, `depth, width, activation, norm, residual,
num_classes, in_channels, image_size`, plus the spec's `model_args`; it may
map the activation and norm names through `vgtune.layers` (`get_activation`,
`get_norm`: this module's tables, public). It returns an `nn.Module` whose probed blocks are its `blocks`
attribute (a sequence of modules) or the module paths the spec lists under
`probe:`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn

from vgtune.core import usercode
from vgtune.core.checks import OptionError, invalid, keyed
from vgtune.core.models import CNN, ModelConfig
from vgtune.core.registry import Registry
from vgtune.core.resnet import ResNetCIFAR, check_depth

ARCHS: Registry[Callable[[ModelConfig], nn.Module]] = Registry("arch", hint="(or model: module:function)")
ARCHS.register("cnn", CNN)  # vgtune's plain stack (vgtune.core.models)
ARCHS.register("resnet_cifar", ResNetCIFAR)  # He et al. 2016's CIFAR ResNets and plain nets (vgtune.core.resnet)
# Options of the built-in architectures that a user factory does not receive: setting them would do nothing.
BUILTIN_ONLY = {"pool": "none", "dropout": 0.0, "kernel_size": 3}
FACTORY_HINT = ("a factory takes depth, width, activation, norm, residual, num_classes, in_channels, image_size "
                "and the spec's model_args as keywords (or **kwargs)")


def factory_kwargs(cfg: ModelConfig) -> dict:
    """What a user factory is called with."""
    return {"depth": cfg.depth, "width": cfg.width, "activation": cfg.activation, "norm": cfg.norm,
            "residual": cfg.residual, "num_classes": cfg.num_classes, "in_channels": cfg.in_channels,
            "image_size": cfg.image_size, **cfg.model_args}


def validate(cfg: ModelConfig) -> None:
    """ModelConfig.validate, plus the architecture's own rules and the factory's signature."""
    cfg.validate()
    if cfg.model is None:
        ARCHS.get(cfg.arch)
        if cfg.model_args:
            raise invalid("model_args", f"are passed to a user factory (model: module:function); arch "
                                        f"{cfg.arch!r} takes none, got {', '.join(cfg.model_args)}")
        if cfg.arch == "resnet_cifar":
            check_depth(cfg.depth)
            if cfg.pool != "none":
                raise keyed("pool", "resnet_cifar downsamples with stride-2 convolutions; pool must be none")
        return
    if not usercode.is_reference(cfg.model):
        raise keyed("model", f"expected module:function (e.g. mypkg.nets:build), got {cfg.model!r}")
    if cfg.arch != "cnn":
        raise OptionError("arch", f"arch and model both given ({cfg.arch!r}, {cfg.model!r}); give one")
    for name, default in BUILTIN_ONLY.items():
        if getattr(cfg, name) != default:
            raise keyed(name, f"an option of vgtune's own architectures; a user model gets it "
                              f"through model_args (and {name} stays {default!r})")
    fn = usercode.load(cfg.model, "model")
    usercode.check_call(fn, cfg.model, "model", factory_kwargs(cfg), FACTORY_HINT)


def create(cfg: ModelConfig) -> nn.Module:
    """The network of `cfg` with PyTorch's default initialization (see `vgtune.core.models.init_weights`)."""
    if cfg.model is None:
        return ARCHS.create(cfg.arch, cfg)
    model = usercode.load(cfg.model, "model")(**factory_kwargs(cfg))
    if not isinstance(model, nn.Module):
        raise keyed("model", f"{cfg.model} returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def probe_blocks(model: nn.Module, paths: list[str] | None = None) -> list[nn.Module]:
    """The modules whose outputs are probed: `paths` (dotted module names) or `model.blocks`."""
    if paths:
        named = dict(model.named_modules())
        missing = [p for p in paths if p not in named]
        if missing:
            listed = [n for n in named if n][:12]
            raise keyed("probe", f"no module {missing[0]!r} in {type(model).__name__}; its modules include "
                                 f"{', '.join(listed)}{' ...' if len(named) > 13 else ''}")
        return [named[p] for p in paths]
    blocks = getattr(model, "blocks", None)
    ok = isinstance(blocks, (list, tuple, nn.ModuleList, nn.Sequential)) and len(blocks) > 0 and all(
        isinstance(b, nn.Module) for b in blocks)
    if not ok:
        raise keyed("model", f"{type(model).__name__} has no blocks to probe; give it a `blocks` attribute "
                             "(a non-empty sequence of modules) or list module paths under probe: [layer1.0, ...]")
    return list(blocks)


def check(cfg: ModelConfig, x: torch.Tensor, y: torch.Tensor, init: str = "default", init_scale: float = 1.0) -> None:
    """Build one model on the CPU, initialize it and run one probed training step on the batch (x, y):
    OptionError (model, arch or probe) naming the first thing that fails (how a spec's model is checked before
    Ray starts)."""
    from vgtune.core.gradflow import GradFlowProbe
    from vgtune.core.models import init_weights

    option, what = ("model", f"{cfg.model}") if cfg.model else ("arch", f"{cfg.arch}")
    try:
        model = create(cfg)
    except OptionError:
        raise
    except Exception as exc:
        raise keyed(option, f"{what} failed to build: {type(exc).__name__}: {exc}") from None
    blocks = probe_blocks(model, cfg.probe)
    init_weights(model, init, sample=x, scale=init_scale, activation=cfg.activation)
    probe = GradFlowProbe(model, cfg.activation, blocks=blocks)
    try:
        with probe.capture():
            out = model(x)
            want = (x.shape[0], cfg.num_classes)
            if not isinstance(out, torch.Tensor) or tuple(out.shape) != want:
                got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                raise keyed(option, f"{what}: output must be (batch, num_classes) = {want}, got {got}")
            torch.nn.functional.cross_entropy(out, y).backward()
        unseen = probe.unseen()
        if unseen:
            names = {id(m): n for n, m in model.named_modules()}
            bad = names.get(id(blocks[unseen[0]]), str(unseen[0]))
            raise keyed("probe", f"block {bad!r} yielded no tensor output with a gradient in the step (it is "
                                 "not used, returns a non-tensor, or is detached); probe modules that output the "
                                 "activations")
        probe.snapshot()
        probe.read()
    except OptionError:
        raise
    except Exception as exc:
        raise keyed(option, f"{what}: a training step on a batch of shape {tuple(x.shape)} failed: "
                                    f"{type(exc).__name__}: {exc}") from None
