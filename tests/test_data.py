import pytest
import torch

from vgtune.core.data import DATASETS, DataConfig, DataError, _load_cpu, _split, load, train_batches


def test_digits_split_is_deterministic():
    a = load(DataConfig(split_seed=3))
    _load_cpu.cache_clear()  # `load` is cached: the second call must really load and split again
    b = load(DataConfig(split_seed=3))
    assert a is not b
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    n = len(a.x_train) + len(a.x_val) + len(a.x_test)
    assert n == 1797 and a.input_shape == (1, 8, 8) and a.num_classes == 10
    c = load(DataConfig(split_seed=4))
    assert not torch.equal(a.y_train, c.y_train)


def test_splits_are_disjoint_and_cover_every_example():
    parts = _split(1797, (0.2, 0.2), seed=3)
    indices = torch.cat(parts)
    assert [len(p) for p in parts] == [359, 359, 1079]
    assert sorted(indices.tolist()) == list(range(1797))  # no example in two splits, none left out


def test_digits_equal_scikit_learns_loader():
    from sklearn.datasets import load_digits

    x, y, *_ = DATASETS["digits"](DataConfig())
    bunch = load_digits()
    assert torch.equal(x, torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0)
    assert torch.equal(y, torch.tensor(bunch.target))


def test_normalization_uses_training_split_only():
    d = load(DataConfig())
    assert abs(d.x_train.mean().item()) < 1e-5
    assert abs(d.x_train.std().item() - 1.0) < 0.05
    assert abs(d.x_test.mean().item()) > 1e-4  # test statistics were not used


def test_batches_slice_a_seeded_permutation():
    x, y = torch.arange(10.0).view(10, 1, 1, 1), torch.arange(10)
    first = list(train_batches(x, y, 3, torch.Generator().manual_seed(0)))
    again = list(train_batches(x, y, 3, torch.Generator().manual_seed(0)))
    assert len(first) == 3 and all(len(b[0]) == 3 for b in first)
    assert all(torch.equal(a[1], b[1]) for a, b in zip(first, again))
    seen = torch.cat([b[1] for b in first])
    assert len(set(seen.tolist())) == 9


def test_unknown_dataset_lists_choices():
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'; valid: digits, synthetic, mnist"):
        load(DataConfig(dataset="imagenet"))


def test_missing_root_names_the_root_and_the_fix(tmp_path):
    with pytest.raises(DataError, match=rf"no usable files under {tmp_path}.*download: true"):
        load(DataConfig(dataset="mnist", root=str(tmp_path)))
    with pytest.raises(DataError, match="needs a data root"):
        load(DataConfig(dataset="cifar10"))


def test_imagefolder_loads_and_resizes(tmp_path):
    from PIL import Image

    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(10):
            colour = (i * 20, 50, 100 if cls == "cat" else 200)
            Image.new("RGB", (20, 14), color=colour).save(tmp_path / cls / f"{i}.png")
    d = load(DataConfig(dataset="imagefolder", root=str(tmp_path), image_size=12))
    assert d.input_shape == (3, 12, 12) and d.num_classes == 2
    assert len(d.x_train) + len(d.x_val) + len(d.x_test) == 20


def test_synthetic_is_seeded():
    cfg = DataConfig(dataset="synthetic", synthetic_size=200)
    a, b = load(cfg), load(DataConfig(**vars(cfg)))
    assert torch.equal(a.x_train, b.x_train) and a.num_classes == 10


def test_crop_flip_shifts_or_mirrors_each_image_within_the_padding():
    import torch

    from vgtune.core.data import crop_flip

    x = torch.arange(1, 1 + 64 * 2 * 6 * 6, dtype=torch.float).reshape(64, 2, 6, 6)
    y = crop_flip(x, torch.Generator().manual_seed(0), pad=2)
    assert y.shape == x.shape
    flipped = 0
    for a, b in zip(x, y):
        views = [torch.nn.functional.pad(v, (2, 2, 2, 2))[:, i:i + 6, j:j + 6]
                 for v, f in ((a, False), (a.flip(2), True)) for i in range(5) for j in range(5)]
        match = [k for k, v in enumerate(views) if torch.equal(v, b)]
        assert match, "not a padded crop of the image or of its mirror"
        flipped += match[0] >= 25
    assert 16 < flipped < 48  # about half are mirrored
    assert torch.equal(crop_flip(x, torch.Generator().manual_seed(0), pad=2), y)  # seeded
