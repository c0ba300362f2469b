import pytest
import torch

from vgtune.core.models import (
    ACTIVATIONS,
    INITS,
    NORMS,
    POOLS,
    RESIDUALS,
    ModelConfig,
    build_model,
    get_activation,
    get_init,
    get_norm,
    init_weights,
)


@pytest.mark.parametrize("lookup,kind,table", [(get_activation, "activation", ACTIVATIONS), (get_init, "init", INITS)])
def test_unknown_name_lists_choices(lookup, kind, table):
    with pytest.raises(ValueError) as err:
        lookup("nope")
    assert str(err.value) == f"unknown {kind} 'nope'; valid: {', '.join(table)}"


def test_unknown_norm_lists_choices():
    with pytest.raises(ValueError, match="unknown norm 'bn'; valid: none, batch, group, layer"):
        get_norm("bn", 8)


def test_a_user_model_takes_its_building_blocks_by_name_from_vgtune_layers():
    """The public home of the tables: the names a spec may give, a lookup that lists them, init by name."""
    import torch.nn as nn

    import vgtune
    from vgtune import layers

    assert (layers.list_activations(), layers.list_norms(), layers.list_inits(), layers.list_residuals()) == (
        ACTIVATIONS.names(), NORMS.names(), INITS.names(), RESIDUALS.names())
    assert isinstance(layers.get_activation("tanh"), nn.Tanh) and isinstance(layers.get_norm("batch", 4),
                                                                             nn.BatchNorm2d)
    with pytest.raises(vgtune.InputError) as err:
        layers.get_norm("bn", 4)
    assert (err.value.path, err.value.valid) == ("norm", tuple(layers.list_norms()))
    block = nn.Sequential(nn.Conv2d(4, 4, 3), nn.Linear(4, 4))
    assert layers.add_branch_scale(block, "rezero") and block.alpha.requires_grad and block.alpha.item() == 0
    layers.init_weights(block, "orthogonal", "identity", scale=0.5)  # gain 1
    w = block[0].weight.flatten(1)
    assert torch.allclose(w @ w.T, 0.25 * torch.eye(4), atol=1e-5) and block[1].bias.abs().sum() == 0
    with pytest.raises(vgtune.InputError, match="unknown activation 'tanhh'"):
        layers.init_weights(block, "xavier_normal", "tanhh")


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="depth must be an integer >= 1, got 0"):
        ModelConfig(depth=0).validate()
    with pytest.raises(ValueError, match="depth must be an integer >= 1, got True"):
        ModelConfig(depth=True).validate()
    with pytest.raises(ValueError, match="unknown residual 'fixup'"):
        ModelConfig(residual="fixup").validate()


@pytest.mark.parametrize("act", list(ACTIVATIONS))
@pytest.mark.parametrize("norm", list(NORMS))
def test_every_activation_and_norm_builds_and_runs(act, norm):
    model = build_model(ModelConfig(depth=3, width=8, activation=act, norm=norm))
    assert model(torch.randn(4, 1, 8, 8)).shape == (4, 10)


TANH_GAIN2 = (5 / 3) ** 2  # torch.nn.init.calculate_gain("tanh") squared
# sigma_w^2 = fan_in * E[W^2] of a width-8 block conv after block 0 (fan_in = fan_out = 8 * 3 * 3) under each init,
# for tanh: PyTorch's default (kaiming_uniform, a = sqrt(5)) gives 1/3; N(0, 0.01^2) gives 72e-4; every scheme
# with a gain gives the gain squared (exactly, for the orthogonal ones: their rows are orthonormal times it).
SIGMA_W2 = {"default": 1 / 3, "normal": 72 * 0.01 ** 2, "xavier_uniform": TANH_GAIN2, "xavier_normal": TANH_GAIN2,
            "kaiming_uniform": TANH_GAIN2, "kaiming_normal": TANH_GAIN2, "orthogonal": TANH_GAIN2,
            "delta_orthogonal": TANH_GAIN2}
EXACT = ("orthogonal", "delta_orthogonal")


def test_every_init_has_its_expected_variance_below():
    assert set(SIGMA_W2) | {"lsuv"} == set(INITS)


@pytest.mark.parametrize("name", list(INITS))
def test_every_init_gives_its_weight_variance(name):
    torch.manual_seed(0)
    model = build_model(ModelConfig(depth=3, width=8, activation="tanh"))
    x = torch.randn(32, 1, 8, 8)
    init_weights(model, name, sample=x)
    convs = [block.conv for block in model.blocks[1:]]
    if name != "default":
        assert all(conv.bias.abs().sum() == 0 for conv in convs)
    if name == "lsuv":  # scaled until each conv's output has unit std on the sample (tolerance 5%)
        outs = []
        hooks = [conv.register_forward_hook(lambda m, i, o: outs.append(o.std().item())) for conv in convs]
        model(x)
        for hook in hooks:
            hook.remove()
        assert outs == pytest.approx([1.0, 1.0], abs=0.05)
        return
    for conv in convs:
        w = conv.weight.double()
        sigma_w2 = w[0].numel() * (w ** 2).mean().item()
        assert sigma_w2 == pytest.approx(SIGMA_W2[name], rel=1e-6 if name in EXACT else 0.2)


def test_delta_orthogonal_is_orthogonal_at_centre():
    model = build_model(ModelConfig(depth=2, width=8, activation="tanh"))
    init_weights(model, "delta_orthogonal")
    w = model.blocks[1].conv.weight
    centre = w[:, :, 1, 1]
    gain = torch.nn.init.calculate_gain("tanh")
    torch.testing.assert_close(centre @ centre.T, gain**2 * torch.eye(8), atol=1e-5, rtol=1e-5)
    assert w[:, :, 0, 0].abs().sum() == 0


def test_lsuv_gives_unit_variance_outputs():
    model = build_model(ModelConfig(depth=4, width=8, activation="relu"))
    x = torch.randn(64, 1, 8, 8)
    init_weights(model, "lsuv", sample=x)
    outs = []
    hook = model.blocks[3].conv.register_forward_hook(lambda m, i, o: outs.append(o))
    model(x)
    hook.remove()
    assert abs(outs[0].std().item() - 1.0) < 0.1


@pytest.mark.parametrize("residual", list(RESIDUALS))
def test_residual_schemes(residual):
    model = build_model(ModelConfig(depth=3, width=8, residual=residual))
    skips = [b.skip for b in model.blocks]
    assert skips == [False, residual != "none", residual != "none"]  # block 1 changes channels
    if residual == "rezero":
        assert model.blocks[1].alpha.requires_grad and model.blocks[1].alpha.item() == 0.0


@pytest.mark.parametrize("pool", list(POOLS))
def test_pooling_shrinks_the_map(pool):
    model = build_model(ModelConfig(depth=6, width=8, pool=pool, pool_stages=2))
    side = 8 if pool == "none" else 2
    assert model.head.in_features == 8 * side * side
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)


# ----------------------------------------------------------------- resnet_cifar (He et al. 2016)

def _resnet(depth=20, residual="standard", **kw):
    from vgtune.core.networks import create

    return create(ModelConfig(arch="resnet_cifar", depth=depth, width=16, norm="batch", residual=residual,
                              in_channels=3, image_size=32, **kw))


def test_resnet_cifar_has_3n_blocks_and_the_paper_s_parameter_count():
    for depth, n in ((20, 3), (32, 5), (56, 9)):
        res, plain = _resnet(depth), _resnet(depth, residual="none")
        assert len(res.blocks) == 3 * n
        count = sum(p.numel() for p in res.parameters())
        assert count == sum(p.numel() for p in plain.parameters())  # option A: shortcuts add no parameters
    # ResNet-20 and ResNet-56 have 0.27M and 0.85M parameters (He et al. 2016, Table 6)
    assert round(sum(p.numel() for p in _resnet(20).parameters()) / 1e6, 2) == 0.27
    assert round(sum(p.numel() for p in _resnet(56).parameters()) / 1e6, 2) == 0.85


def test_resnet_cifar_stages_halve_the_map_and_double_the_channels():
    net = _resnet(20)
    shapes = []
    hooks = [b.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape))) for b in net.blocks]
    out = net(torch.randn(2, 3, 32, 32))
    for h in hooks:
        h.remove()
    assert out.shape == (2, 10)
    assert shapes[::3] == [(2, 16, 32, 32), (2, 32, 16, 16), (2, 64, 8, 8)]


def test_option_a_shortcut_subsamples_and_pads_zero_channels():
    from vgtune.core.resnet import ShortcutA

    x = torch.randn(2, 16, 8, 8)
    y = ShortcutA(16, 32, 2)(x)
    assert y.shape == (2, 32, 4, 4)
    assert torch.equal(y[:, :16], x[:, :, ::2, ::2]) and y[:, 16:].abs().max() == 0


def test_rezero_blocks_start_as_the_shortcut_and_plain_blocks_have_none():
    net = _resnet(8, residual="rezero", activation="identity")
    block = net.blocks[0]
    x = torch.randn(2, 16, 8, 8)
    assert torch.equal(block(x), x)
    assert all(b.shortcut is None for b in _resnet(8, residual="none").blocks)


def test_resnet_cifar_trains_on_small_inputs_and_is_probed():
    from vgtune.core.train import TrainConfig, train

    result = train(TrainConfig(arch="resnet_cifar", depth=14, width=4, norm="batch", init="kaiming_normal",
                               epochs=2, dataset="synthetic", device="cpu", lr=0.05))
    assert result.status == "completed" and len(result.layers[0]["series"]["grad_norm"]) == 6
    assert result.summary["test_acc"] > 0.5
