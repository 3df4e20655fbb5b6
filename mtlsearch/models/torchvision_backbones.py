"""torchvision's image classifiers as backbones: their feature extractors cut into named blocks.

Every residual (or inverted-residual) block is a block of its own, so that blocks of equal input
and output shape can be skipped or gated, as AdaShare does with ResNet blocks (Sun et al.,
NeurIPS 2020, arXiv:1911.12423). The classifier and its global pooling are left out: the task
heads pool. See docs/models.md#torchvision-backbones.

torchvision is imported only when one of these backbones is built.
"""

from __future__ import annotations

import copy
import os
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from ..config import as_bool
from ..errors import ConfigError, show
from .backbones import BACKBONES, Backbone

Part = tuple[str, str, nn.Module]  # (block name, prefix of its keys in torchvision's state dict, module on "meta")


def dilate_after_stride_8(modules: Iterable[nn.Module]) -> None:
    """Make the output stride 8: every convolution that would downsample past 1/8 gets stride 1,
    and the ``k x k`` convolutions after it are dilated instead (DeepLab's "atrous" trick).

    ``modules`` are visited in the order they run. The strided convolution keeps the dilation in
    force before it; the dilation then doubles (times its stride) for the convolutions after it,
    which is torchvision's ``replace_stride_with_dilation`` for ResNet-50. ``1 x 1`` (shortcut)
    convolutions only lose their stride.
    """
    stride, dilation = 1, 1
    for m in modules:
        if isinstance(m, nn.MaxPool2d):
            s = m.stride if isinstance(m.stride, int) else m.stride[0]
            if stride >= 8 and s > 1:
                raise ValueError("cannot dilate a max-pool")  # none of the supported models pools that deep
            stride *= s
        if not isinstance(m, nn.Conv2d):
            continue
        s, k = m.stride[0], m.kernel_size[0]
        if k == 1:  # a shortcut strides along with its block's k x k convolution, counted already
            if dilation > 1:
                m.stride = (1, 1)
            continue
        if stride < 8:
            stride *= s
            continue
        m.stride = (1, 1)
        m.dilation = (dilation, dilation)
        m.padding = (dilation * (k - 1) // 2, dilation * (k - 1) // 2)
        dilation *= s


def init_like_torchvision(module: nn.Module) -> None:
    """Initialise as torchvision's ResNet, MobileNetV3 and EfficientNet do: convolutions He-normal
    with ``fan_out`` (He et al., ICCV 2015), biases 0, batch norms 1 and 0 with fresh statistics.

    Raises ``TypeError`` on a layer with its own parameters that is none of these: a torchvision
    release that adds one must be looked at, not initialised by accident.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            m.reset_parameters()
        elif any(True for _ in m.parameters(recurse=False)) or any(True for _ in m.buffers(recurse=False)):
            raise TypeError(f"no initialisation known for torchvision layer {type(m).__name__}")


class TorchvisionBackbone(Backbone):
    """A torchvision classifier's feature extractor, one block per (inverted) residual block.

    Args:
        input_shape: ``(C, H, W)``; ``C != 3`` replaces the first convolution by one with ``C``
            input channels, freshly initialised (pretrained weights are not loaded for it).
        weights: path to a state dict of the whole torchvision model, as
            ``torch.save(model.state_dict(), path)`` writes it; each block loads its slice, every
            copy the same. The classifier's entries are ignored. Nothing is downloaded.
        dilated: output stride 8 instead of 32 (for dense outputs); see
            :func:`dilate_after_stride_8`.

    The registered name is the ``torchvision.models.get_model`` name. Blocks are copies of one
    torchvision model built on the ``meta`` device (no memory, no initialisation), materialised
    and initialised by :func:`init_like_torchvision` per copy.
    """

    classifier: ClassVar[tuple[str, ...]] = ()  # key prefixes of the classifier (ignored in weights)

    def __init__(self, input_shape, weights: str | None = None, dilated: bool = False):
        shape = tuple(input_shape)
        if len(shape) != 3:
            raise ConfigError(
                "name",
                f"backbone `{self.name}` needs image inputs of shape (C, H, W), found input shape {shape}; "
                "use `mlp` for vectors",
            )
        if weights is not None and (not isinstance(weights, (str, os.PathLike)) or weights == ""):
            raise ConfigError("weights", f"expected the path of a state dict file, found {show(weights)}")
        self.weights = None if weights is None else os.fspath(weights)
        self.dilated = as_bool(dilated, "dilated")
        model = self._model()
        expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        self._parts: list[Part] = self._split(model)
        self._adapted: str | None = None  # state-dict key of a first convolution replaced for C != 3
        if int(shape[0]) != 3:
            self._adapted = self._parts[0][1] + replace_first_conv(self._parts[0][2], int(shape[0]))
        self._pretrained: list[dict[str, torch.Tensor]] | None = None
        if self.weights is not None:
            self._pretrained = self._read_weights(self.weights, expected)
        super().__init__(shape)

    def _model(self) -> nn.Module:
        """The whole torchvision model on the ``meta`` device, dilated if asked."""
        import torchvision

        with torch.device("meta"):
            model = torchvision.models.get_model(self.name, weights=None, **self._dilation_kwargs())
        if self.dilated and not self._dilation_kwargs():
            dilate_after_stride_8(model.modules())
        return model

    def _dilation_kwargs(self) -> dict[str, Any]:
        return {}

    def _split(self, model: nn.Module) -> list[Part]:
        raise NotImplementedError

    @property
    def num_blocks(self) -> int:
        return len(self._parts)

    @property
    def block_names(self) -> list[str]:
        return [name for name, _, _ in self._parts]

    def _make_block(self, index: int) -> nn.Module:
        block = copy.deepcopy(self._parts[index][2]).to_empty(device="cpu")
        init_like_torchvision(block)
        if self._pretrained is not None:
            own = block.state_dict()
            with torch.no_grad():
                for key, value in self._pretrained[index].items():
                    own[key].copy_(value)
        return block

    def _read_weights(self, path: str, expected: Mapping[str, tuple[int, ...]]) -> list[dict[str, torch.Tensor]]:
        """Per block, its tensors of the state dict in ``path`` (keys relative to the block)."""
        state = read_state_dict(path)
        wanted = {k: s for k, s in expected.items() if not k.startswith(self.classifier)}
        missing = [k for k in wanted if k not in state]
        unexpected = [k for k in state if k not in wanted and not k.startswith(self.classifier)]
        wrong = [k for k in wanted if k in state and tuple(state[k].shape) != wanted[k]]
        if missing or unexpected or wrong:
            problems = []
            if missing:
                problems.append(f"missing keys: {len(missing)} of {len(wanted)} ({few(missing)})")
            if unexpected:
                problems.append(f"keys that are not {self.name}'s: {len(unexpected)} ({few(unexpected)})")
            if wrong:
                k, found = wrong[0], tuple(state[wrong[0]].shape)
                problems.append(f"tensors of another shape: {len(wrong)} (`{k}`: expected {wanted[k]}, found {found})")
            raise ConfigError(
                "weights",
                f"`{path}` is not a state dict of torchvision's {self.name}: {'; '.join(problems)}",
            )
        out = []
        for _, prefix, module in self._parts:
            keys = [prefix + k for k in module.state_dict() if prefix + k != self._adapted]
            out.append({k[len(prefix) :]: state[k] for k in keys})
        return out

    def hyperparameters(self) -> dict:
        return {"weights": self.weights, "dilated": self.dilated}


def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """The tensors saved in ``path`` by ``torch.save(state_dict)``, read with ``weights_only=True``
    (no code in the file runs)."""
    full = os.path.abspath(os.path.expanduser(path))
    if not os.path.isfile(full):
        raise ConfigError(
            "weights", f"no file `{path}`; expected a state dict saved with torch.save (nothing is downloaded)"
        )
    try:
        state = torch.load(full, map_location="cpu", weights_only=True)
    except Exception as err:  # a user's file: anything it raises is its fault, said in one line
        reason = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ConfigError(
            "weights",
            f"cannot read `{path}` as a state dict saved with torch.save: {type(err).__name__}"
            + (f": {reason}" if reason else ""),
        ) from None
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        what = type(state).__name__ if not isinstance(state, Mapping) else "a mapping with other entries"
        raise ConfigError(
            "weights",
            f"`{path}` holds {what}, not a state dict (parameter names to tensors, as model.state_dict() gives)",
        )
    return dict(state)


def few(keys: list[str], n: int = 3) -> str:
    return ", ".join(keys[:n]) + (", ..." if len(keys) > n else "")


def replace_first_conv(block: nn.Module, in_channels: int) -> str:
    """Replace the first convolution of ``block`` by one taking ``in_channels``; its key's name."""
    name, conv = next((n, m) for n, m in block.named_modules() if isinstance(m, nn.Conv2d))
    parent, _, attr = name.rpartition(".")
    with torch.device("meta"):
        new = nn.Conv2d(
            in_channels,
            conv.out_channels,
            conv.kernel_size,  # type: ignore[arg-type]
            stride=conv.stride,  # type: ignore[arg-type]
            padding=conv.padding,  # type: ignore[arg-type]
            dilation=conv.dilation,  # type: ignore[arg-type]
            groups=1,
            bias=conv.bias is not None,
        )
    setattr(block.get_submodule(parent) if parent else block, attr, new)
    return f"{name}.weight"


class ResNet(TorchvisionBackbone):
    """ResNet (He et al., CVPR 2016, arXiv:1512.03385) as blocks ``stem`` (conv1-bn1-relu-maxpool),
    then ``layer<i>_<j>``, torchvision's ``layer<i>[j]``.

    .. note:: ``dilated`` on ResNet-18/34: torchvision's BasicBlock refuses dilation, so the
       stride-2 convolutions of ``layer3`` and ``layer4`` (shortcuts included) get stride 1 and
       the 3x3 convolutions after them dilation 2, then 4, as ResNet-50's Bottleneck does with
       ``replace_stride_with_dilation=[False, True, True]``.
    """

    classifier = ("fc.",)

    def _dilation_kwargs(self) -> dict[str, Any]:
        if self.dilated and (self.name) == "resnet50":
            return {"replace_stride_with_dilation": [False, True, True]}
        return {}

    def _split(self, model: nn.Module) -> list[Part]:
        m: Any = model
        stem = nn.Sequential(OrderedDict(conv1=m.conv1, bn1=m.bn1, relu=m.relu, maxpool=m.maxpool))
        parts: list[Part] = [("stem", "", stem)]
        for i in range(1, 5):
            layer = m.get_submodule(f"layer{i}")
            parts += [(f"layer{i}_{j}", f"layer{i}.{j}.", block) for j, block in enumerate(layer)]
        return parts


class MobileNetV3(TorchvisionBackbone):
    """MobileNetV3 (Howard et al., ICCV 2019, arXiv:1905.02244) as blocks ``features_<i>``,
    torchvision's ``features[i]``: the stem convolution, each inverted-residual block, the last
    1x1 convolution.

    .. note:: ``dilated`` gives output stride 8 (:func:`dilate_after_stride_8`), not torchvision's
       own ``dilated=True`` (output stride 16, last stage only).
    """

    classifier = ("classifier.",)

    def _split(self, model: nn.Module) -> list[Part]:
        features: Any = model.get_submodule("features")
        return [(f"features_{i}", f"features.{i}.", block) for i, block in enumerate(features)]


class EfficientNet(TorchvisionBackbone):
    """EfficientNet (Tan & Le, ICML 2019, arXiv:1905.11946) as blocks ``features_0`` (stem),
    ``features_<i>_<j>`` (MBConv ``j`` of stage ``i``, torchvision's ``features[i][j]``) and
    ``features_8`` (the last 1x1 convolution). Stochastic depth stays as torchvision sets it.

    .. note:: ``dilated`` gives output stride 8 (:func:`dilate_after_stride_8`).
    """

    classifier = ("classifier.",)

    def _split(self, model: nn.Module) -> list[Part]:
        features: Any = model.get_submodule("features")
        last = len(features) - 1
        parts: list[Part] = []
        for i, stage in enumerate(features):
            if i in (0, last):
                parts.append((f"features_{i}", f"features.{i}.", stage))
            else:
                parts += [(f"features_{i}_{j}", f"features.{i}.{j}.", block) for j, block in enumerate(stage)]
        return parts


@BACKBONES.register("resnet18")
class ResNet18(ResNet):
    """ResNet-18: ``stem``, ``layer1_0`` ... ``layer4_1`` (9 blocks)."""


@BACKBONES.register("resnet34")
class ResNet34(ResNet):
    """ResNet-34: ``stem``, ``layer1_0`` ... ``layer4_2`` (17 blocks)."""


@BACKBONES.register("resnet50")
class ResNet50(ResNet):
    """ResNet-50 (Bottleneck blocks): ``stem``, ``layer1_0`` ... ``layer4_2`` (17 blocks)."""


@BACKBONES.register("mobilenet_v3_small")
class MobileNetV3Small(MobileNetV3):
    """MobileNetV3-Small: ``features_0`` ... ``features_12`` (13 blocks)."""


@BACKBONES.register("mobilenet_v3_large")
class MobileNetV3Large(MobileNetV3):
    """MobileNetV3-Large: ``features_0`` ... ``features_16`` (17 blocks)."""


@BACKBONES.register("efficientnet_b0")
class EfficientNetB0(EfficientNet):
    """EfficientNet-B0: ``features_0``, ``features_1_0`` ... ``features_7_0``, ``features_8`` (18 blocks)."""


__all__ = [
    "EfficientNet",
    "EfficientNetB0",
    "MobileNetV3",
    "MobileNetV3Large",
    "MobileNetV3Small",
    "ResNet",
    "ResNet18",
    "ResNet34",
    "ResNet50",
    "TorchvisionBackbone",
    "dilate_after_stride_8",
    "init_like_torchvision",
]
