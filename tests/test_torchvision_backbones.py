"""torchvision backbones: block names and shapes, blocks that chain to torchvision's own trunk,
pretrained weights from a local file (and the errors of a bad one), dilation, other input
channels, and the families and a search built on them."""

from __future__ import annotations

import copy

import optuna
import pytest
import torch
import torchvision
from torch import nn

import mtlsearch
from mtlsearch.models import BACKBONES
from mtlsearch.models.torchvision_backbones import dilate_after_stride_8
from mtlsearch.problem import build_backbone

from conftest import TINY_SPACE

NAMES = ["resnet18", "resnet34", "resnet50", "mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0"]
IMAGE = (3, 32, 32)

# per backbone at 3x32x32: (number of blocks, output shape, blocks that keep their shape)
EXPECTED = {
    "resnet18": (9, (512, 1, 1), ["layer1_0", "layer1_1", "layer2_1", "layer3_1", "layer4_1"]),
    "resnet34": (
        17,
        (512, 1, 1),
        [
            "layer1_0",
            "layer1_1",
            "layer1_2",
            "layer2_1",
            "layer2_2",
            "layer2_3",
            "layer3_1",
            "layer3_2",
            "layer3_3",
            "layer3_4",
            "layer3_5",
            "layer4_1",
            "layer4_2",
        ],
    ),
    "resnet50": (
        17,
        (2048, 1, 1),
        [
            "layer1_1",
            "layer1_2",
            "layer2_1",
            "layer2_2",
            "layer2_3",
            "layer3_1",
            "layer3_2",
            "layer3_3",
            "layer3_4",
            "layer3_5",
            "layer4_1",
            "layer4_2",
        ],
    ),
    "mobilenet_v3_small": (
        13,
        (576, 1, 1),
        ["features_3", "features_5", "features_6", "features_8", "features_10", "features_11"],
    ),
    "mobilenet_v3_large": (
        17,
        (960, 1, 1),
        [
            "features_1",
            "features_3",
            "features_5",
            "features_6",
            "features_8",
            "features_9",
            "features_10",
            "features_12",
            "features_14",
            "features_15",
        ],
    ),
    "efficientnet_b0": (
        18,
        (1280, 1, 1),
        [
            "features_2_1",
            "features_3_1",
            "features_4_1",
            "features_4_2",
            "features_5_1",
            "features_5_2",
            "features_6_1",
            "features_6_2",
            "features_6_3",
        ],
    ),
}


def skippable(backbone) -> list[str]:
    return [n for n, (i, o) in zip(backbone.block_names, backbone.shapes) if i == o]


def trunk(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """torchvision's own forward up to (not including) the global pooling."""
    if isinstance(model, torchvision.models.ResNet):
        x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
        return model.layer4(model.layer3(model.layer2(model.layer1(x))))
    return model.features(x)


def saved(tmp_path, name: str, **kwargs) -> tuple[nn.Module, str]:
    """A torchvision model with random weights and random BN statistics, saved as torchvision does."""
    torch.manual_seed(1)
    model = torchvision.models.get_model(name, weights=None, **kwargs)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
                m.weight.normal_()
    path = tmp_path / f"{name}.pth"
    torch.save(model.state_dict(), path)
    return model.eval(), str(path)


@pytest.mark.parametrize("name", NAMES)
def test_blocks_have_names_shapes_and_skippable_blocks(name):
    backbone = BACKBONES.get(name)(IMAGE)
    count, output, keep = EXPECTED[name]
    assert backbone.num_blocks == len(backbone.block_names) == len(set(backbone.block_names)) == count
    assert all("." not in n for n in backbone.block_names)
    assert backbone.shapes[0][0] == IMAGE and backbone.output_shape == output
    assert all(backbone.shapes[b][1] == backbone.shapes[b + 1][0] for b in range(count - 1))
    assert skippable(backbone) == keep
    assert repr(backbone) == f"{type(backbone).__name__}(input_shape=(3, 32, 32), weights=None, dilated=False)"


def test_resnet18_block_names_and_shapes():
    backbone = BACKBONES.get("resnet18")(IMAGE)
    assert backbone.block_names == [
        "stem",
        "layer1_0",
        "layer1_1",
        "layer2_0",
        "layer2_1",
        "layer3_0",
        "layer3_1",
        "layer4_0",
        "layer4_1",
    ]
    assert [o for _, o in backbone.shapes] == [
        (64, 8, 8),
        (64, 8, 8),
        (64, 8, 8),
        (128, 4, 4),
        (128, 4, 4),
        (256, 2, 2),
        (256, 2, 2),
        (512, 1, 1),
        (512, 1, 1),
    ]


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small", "efficientnet_b0"])
def test_weights_load_into_every_copy_and_blocks_chain_to_torchvision(tmp_path, name):
    model, path = saved(tmp_path, name)
    backbone = BACKBONES.get(name)(IMAGE, weights=path)
    assert repr(backbone).endswith(f"weights={path!r}, dilated=False)")
    state = torch.load(path, weights_only=True)
    x = torch.randn(2, *IMAGE)
    h = x
    for b, block_name in enumerate(backbone.block_names):
        one, two = backbone.build_block(b), backbone.build_block(b)
        for key, value in one.state_dict().items():
            assert torch.equal(value, two.state_dict()[key])
        assert all(p.data_ptr() != q.data_ptr() for p, q in zip(one.parameters(), two.parameters()))
        if name == "resnet18":  # the slice of each block, key by key
            prefix = "" if block_name == "stem" else block_name.replace("_", ".") + "."
            for key, value in one.state_dict().items():
                assert torch.equal(value, state[prefix + key]), key
        h = one.eval()(h)
    with torch.no_grad():
        torch.testing.assert_close(h, trunk(model, x), rtol=1e-4, atol=1e-4)


def test_blocks_are_fresh_and_initialised_as_torchvision_does():
    backbone = BACKBONES.get("resnet18")(IMAGE)
    b = backbone.block_names.index("layer4_1")
    torch.manual_seed(0)
    one, two = backbone.build_block(b), backbone.build_block(b)
    torch.manual_seed(0)
    again = backbone.build_block(b)
    assert not torch.equal(one.conv1.weight, two.conv1.weight)
    assert torch.equal(one.conv1.weight, again.conv1.weight)
    assert one.conv1.weight.device.type == "cpu" and one.conv1.weight.requires_grad
    reference = torchvision.models.resnet18().layer4[1]
    for ours, theirs in ((one.conv1.weight, reference.conv1.weight), (one.bn1.weight, reference.bn1.weight)):
        assert ours.std().item() == pytest.approx(theirs.std().item(), rel=0.05, abs=1e-6)
        assert ours.mean().item() == pytest.approx(theirs.mean().item(), abs=1e-3)
    assert torch.equal(one.bn1.running_var, torch.ones(512)) and one.bn1.num_batches_tracked.item() == 0


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "mobilenet_v3_large", "efficientnet_b0"])
def test_dilated_output_stride_is_8(name):
    backbone = BACKBONES.get(name)(IMAGE, dilated=True)
    assert backbone.output_shape[1:] == (4, 4)
    assert skippable(backbone) == EXPECTED[name][2]
    assert repr(backbone).endswith("weights=None, dilated=True)")


def test_dilation_rule_is_torchvisions_for_resnet50():
    def convs(model):
        return [(n, m.stride, m.dilation, m.padding) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]

    with torch.device("meta"):
        ours = torchvision.models.resnet50()
        theirs = torchvision.models.resnet50(replace_stride_with_dilation=[False, True, True])
    dilate_after_stride_8(ours.modules())
    assert convs(ours) == convs(theirs)


def test_dilated_resnet18_strides_and_dilations():
    backbone = BACKBONES.get("resnet18")(IMAGE, dilated=True)
    blocks = {n: backbone.build_block(b) for b, n in enumerate(backbone.block_names)}
    got = {
        n: [(m.stride[0], m.dilation[0]) for m in blocks[n].modules() if isinstance(m, nn.Conv2d)]
        for n in ("layer2_0", "layer3_0", "layer3_1", "layer4_0", "layer4_1")
    }
    assert got == {
        "layer2_0": [(2, 1), (1, 1), (2, 1)],  # conv1, conv2, shortcut
        "layer3_0": [(1, 1), (1, 2), (1, 1)],
        "layer3_1": [(1, 2), (1, 2)],
        "layer4_0": [(1, 2), (1, 4), (1, 1)],
        "layer4_1": [(1, 4), (1, 4)],
    }


def test_dilated_blocks_load_the_same_weights(tmp_path):
    _, path = saved(tmp_path, "resnet18")
    backbone = BACKBONES.get("resnet18")(IMAGE, weights=path, dilated=True)
    state = torch.load(path, weights_only=True)
    block = backbone.build_block(backbone.block_names.index("layer4_0"))
    assert torch.equal(block.conv2.weight, state["layer4.0.conv2.weight"])


def test_other_input_channels_replace_the_first_convolution(tmp_path):
    _, path = saved(tmp_path, "resnet18")
    state = torch.load(path, weights_only=True)
    backbone = BACKBONES.get("resnet18")((1, 8, 16), weights=path)
    stem = backbone.build_block(0)
    assert stem.conv1.weight.shape == (64, 1, 7, 7)  # fresh: the file's conv1 takes 3 channels
    assert torch.equal(stem.bn1.weight, state["bn1.weight"])
    assert backbone.output_shape == (512, 1, 1)
    small = BACKBONES.get("efficientnet_b0")((5, 16, 16)).build_block(0)
    assert small[0].weight.shape == (32, 5, 3, 3)


def test_vector_inputs_are_refused():
    with pytest.raises(mtlsearch.ConfigError) as err:
        BACKBONES.get("resnet18")((10,))
    assert str(err.value) == (
        "name: backbone `resnet18` needs image inputs of shape (C, H, W), found input shape (10,); use `mlp` for vectors"
    )


def space(backbone: dict, families=("hard_sharing", "tree")) -> dict:
    out = copy.deepcopy(TINY_SPACE)
    out["backbone"] = backbone
    out["data"].update(n_train=64, n_val=32, n_test=32)
    out["search_space"] = {
        "families": list(families),
        "weightings": ["equal"],
        "training": {"epochs": 1, "batch_size": 32, "optimizer": "adam", "lr": 1.0e-3},
    }
    return out


def load_error(backbone: dict) -> str:
    """The error of the space's ``backbone`` section, as ``mtlsearch.load`` reports it (without
    loading the data: ``build_backbone`` is what ``Problem`` calls)."""
    with pytest.raises(mtlsearch.ConfigError) as err:
        build_backbone(backbone, IMAGE)
    return str(err.value)


def test_bad_settings_and_weights_files_are_named(tmp_path):
    assert load_error({"name": "resnet18", "dilated": "yes"}) == "backbone.dilated: expected true or false, found `yes`"
    assert load_error({"name": "resnet18", "weights": 3}) == (
        "backbone.weights: expected the path of a state dict file, found 3"
    )
    assert load_error({"name": "resnet18", "pretrained": True}) == (
        "backbone.pretrained: unknown parameter of `resnet18`; allowed: weights, dilated"
    )
    missing = str(tmp_path / "nope.pth")
    assert load_error({"name": "resnet18", "weights": missing}) == (
        f"backbone.weights: no file `{missing}`; expected a state dict saved with torch.save (nothing is downloaded)"
    )
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a torch file")
    assert load_error({"name": "resnet18", "weights": str(garbage)}).startswith(
        f"backbone.weights: cannot read `{garbage}` as a state dict saved with torch.save: "
    )
    tensor = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), tensor)
    assert load_error({"name": "resnet18", "weights": str(tensor)}) == (
        f"backbone.weights: `{tensor}` holds Tensor, not a state dict (parameter names to tensors, as "
        "model.state_dict() gives)"
    )
    state = torchvision.models.resnet18().state_dict()
    wrapped = tmp_path / "wrapped.pth"  # as nn.DataParallel saves it
    torch.save({f"module.{k}": v for k, v in state.items()}, wrapped)
    assert load_error({"name": "resnet18", "weights": str(wrapped)}) == (
        f"backbone.weights: `{wrapped}` is not a state dict of torchvision's resnet18: missing keys: 120 of 120 "
        "(conv1.weight, bn1.weight, bn1.bias, ...); keys that are not resnet18's: 122 (module.conv1.weight, "
        "module.bn1.weight, module.bn1.bias, ...)"
    )
    state["conv1.weight"] = torch.zeros(64, 1, 7, 7)
    del state["layer4.1.bn2.bias"]
    wrong = tmp_path / "wrong.pth"
    torch.save(state, wrong)
    assert load_error({"name": "resnet18", "weights": str(wrong)}) == (
        f"backbone.weights: `{wrong}` is not a state dict of torchvision's resnet18: missing keys: 1 of 120 "
        "(layer4.1.bn2.bias); tensors of another shape: 1 (`conv1.weight`: expected (64, 3, 7, 7), found (64, 1, 7, 7))"
    )


def test_the_classifier_may_have_any_size(tmp_path):
    model = torchvision.models.mobilenet_v3_small(num_classes=7)
    path = tmp_path / "seven.pth"
    torch.save(model.state_dict(), path)
    backbone = BACKBONES.get("mobilenet_v3_small")(IMAGE, weights=str(path))
    assert torch.equal(backbone.build_block(1).block[0][0].weight, model.features[1].block[0][0].weight)


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small", "efficientnet_b0"])
def test_families_build_train_and_skip_blocks(name):
    problem = mtlsearch.load(space({"name": name}, families=("hard_sharing", "tree", "adashare")))[0]
    x = torch.randn(4, *problem.input_shape)
    for family in ("hard_sharing", "tree", "adashare"):
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=2))
        study.enqueue_trial({"family": family})
        candidate = problem.sample(study.ask())
        model = candidate.build_model(seed=0)
        out = model(x)
        assert {t: o.shape[0] for t, o in out.items()} == {t: 4 for t in problem.task_names}
        sum(o.pow(2).mean() for o in out.values()).backward()
        assert all(p.grad is not None for p in model.parameters()), family
        if family == "tree":
            assert max(model.distinct_prefixes()) > 1, "the sampled tree branches"


def test_a_search_trial_on_resnet18(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    raw = space({"name": "resnet18"}, families=("hard_sharing",))
    raw["data"].update(n_train=32, n_val=16, n_test=16)
    raw["run"].update(n_trials=1, storage=f"sqlite:///{tmp_path}/tv.db", study="tv", sampler="random", threads=1)
    raw["baselines"] = {"left": {"accuracy": 0.1}, "right": {"accuracy": 0.1}, "sum": {"mae": 3.0}}  # nothing to train
    problem, run = mtlsearch.load(raw)
    assert problem.backbone.block_names[0] == "stem" and problem.input_shape == (1, 8, 16)
    study = mtlsearch.run_search(problem, run)
    (trial,) = study.trials
    assert trial.state == optuna.trial.TrialState.COMPLETE
    model = mtlsearch.build_model(problem, trial)
    assert sum(p.numel() for p in model.parameters()) == trial.user_attrs["params"]
