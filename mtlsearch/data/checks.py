"""Checking what a data factory returned, where it enters mtlsearch.

A factory is user code. Without these checks a bad split surfaces far from its cause: ragged
inputs as a ``torch.stack`` error inside a ``DataLoader``, a NaN target as a NaN loss that seems
to blame the learning rate, non-JSON ``info`` as a ``json`` error while the study is written.

A :class:`~mtlsearch.data.TensorMTLDataset` is checked on its tensors; any other dataset is read
item by item once (so a lazily loaded dataset is read in full when the data loads).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import torch

from ..errors import ConfigError, MTLSearchError, UserCodeError
from ..tasks import TaskSpec
from .base import MTLData, TensorMTLDataset

SPLITS = ("train", "val", "test")
MAX_MESSAGE = 300  # characters of a user exception's message shown in the one-line error

SplitTargets = dict[str, dict[str, torch.Tensor]]


def raised(path: str, what: str, err: BaseException) -> UserCodeError:
    """The one-line error for user code (``what``) that raised ``err``; raise it ``from err``."""
    if isinstance(err, SystemExit):
        return UserCodeError(
            path, f"{what} raised SystemExit({err.code!r}); it must return or raise an exception, not end the program"
        )
    text = " ".join(str(err).split())
    if len(text) > MAX_MESSAGE:
        text = text[: MAX_MESSAGE - 3] + "..."
    return UserCodeError(path, f"{what} raised {type(err).__name__}" + (f": {text}" if text else ""))


def check_data(data: MTLData, label: str) -> SplitTargets:
    """Check ``data`` against the :class:`MTLData` contract; return each split's targets, one
    tensor per task (a row per item).

    Args:
        data: what the factory returned.
        label: who made it, for messages: ``factory `pkg.mod:make``` or ``benchmark `name```.

    Raises:
        ConfigError: naming the split (``data.test``), the task and the first bad item;
            :class:`~mtlsearch.errors.UserCodeError` where the dataset itself raised.
    """
    tasks = data.tasks
    if not isinstance(tasks, (list, tuple)):
        raise ConfigError("data.tasks", f"{label} returned {type(tasks).__name__}; expected a list of TaskSpec")
    for i, task in enumerate(tasks):
        if not isinstance(task, TaskSpec):
            raise ConfigError(
                f"data.tasks[{i}]", f"{label} returned {type(task).__name__}; expected mtlsearch.tasks.TaskSpec"
            )
    check_info(data.info, label)
    shapes: dict[str, tuple[int, ...]] = {}
    targets: SplitTargets = {}
    for split in SPLITS:
        ds = getattr(data, split)
        read = read_tensors if isinstance(ds, TensorMTLDataset) else read_items
        shapes[split], targets[split] = read(ds, split, label)
    for split in ("val", "test"):
        if shapes[split] != shapes["train"]:
            raise ConfigError(
                f"data.{split}",
                f"{label} returned inputs of shape {shapes[split]}; the train split's are {shapes['train']}, "
                "and every split needs the same input shape",
            )
    return targets


def check_info(info: Any, label: str) -> None:
    """``info`` is a dict of JSON values: it is stored with the study."""
    if not isinstance(info, dict):
        raise ConfigError("data.info", f"{label} returned {type(info).__name__}; expected a dict of JSON values")
    for key, value in info.items():
        try:
            json.dumps({key: value})
        except (TypeError, ValueError) as err:
            raise ConfigError(
                f"data.info.{key}",
                f"{label} returned a value that is not JSON-serialisable ({err}); info is stored with the study",
            ) from None


def read_tensors(ds: TensorMTLDataset, split: str, label: str) -> tuple[tuple[int, ...], dict[str, torch.Tensor]]:
    """The input shape and targets of an in-memory split, checked."""
    where = f"data.{split}"
    x = ds.inputs
    if not isinstance(x, torch.Tensor) or x.dim() == 0:
        found = f"a {x.dim()}-D tensor" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ConfigError(where, f"{label} returned inputs as {found}; expected a torch.Tensor of shape (N, ...)")
    n = x.shape[0]
    if n == 0:
        raise ConfigError("data", f"{label} returned an empty {split} split")
    check_input_dtype(x, where, label, "")
    check_finite(x, where, f"{label} returned {{value}} in the inputs at item {{index}}; inputs must be finite")
    for task, t in ds.targets.items():
        if not isinstance(t, torch.Tensor) or t.dim() == 0 or t.shape[0] != n:
            found = f"{t.shape[0]} targets" if isinstance(t, torch.Tensor) and t.dim() else f"a {type(t).__name__}"
            raise ConfigError(
                where,
                f"{label} returned {found} for task `{task}` and {n} inputs; "
                "each task needs a tensor with one target per input",
            )
        check_target(t, task, where, label)
        check_spatial(t, tuple(x.shape[1:]), task, where, label)
    return tuple(x.shape[1:]), dict(ds.targets)


def read_items(ds: Any, split: str, label: str) -> tuple[tuple[int, ...], dict[str, torch.Tensor]]:
    """The input shape and stacked targets of a split read item by item, checked."""
    where = f"data.{split}"
    if not (hasattr(ds, "__len__") and hasattr(ds, "__getitem__")):
        raise ConfigError(
            where,
            f"{label} returned {type(ds).__name__} as the {split} split; expected a torch Dataset with a length, "
            "whose items are (inputs, {task: target})",
        )
    n = _call(lambda: len(ds), where, f"len() of {label}'s {split} split")
    if n == 0:
        raise ConfigError("data", f"{label} returned an empty {split} split")
    shape: tuple[int, ...] = ()
    columns: dict[str, list[torch.Tensor]] = {}
    for i in range(n):
        item = _call(lambda i=i: ds[i], where, f"{label}'s {split} split at item {i}")
        if not (isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[1], Mapping)):
            raise ConfigError(
                where, f"{label} returned {type(item).__name__} as item {i}; expected a pair (inputs, {{task: target}})"
            )
        x, y = item
        if not isinstance(x, torch.Tensor):
            raise ConfigError(
                where, f"{label} returned inputs of type {type(x).__name__} at item {i}; expected a torch.Tensor"
            )
        check_input_dtype(x, where, label, f" at item {i}")
        check_finite(
            x.unsqueeze(0), where, f"{label} returned {{value}} in the inputs at item {i}; inputs must be finite"
        )
        if i == 0:
            shape, columns = tuple(x.shape), {str(k): [] for k in y}
        elif tuple(x.shape) != shape:
            raise ConfigError(
                where,
                f"{label} returned inputs of shape {tuple(x.shape)} at item {i} and {shape} at item 0; "
                "every input of a split needs the same shape",
            )
        if sorted(map(str, y)) != sorted(columns):
            raise ConfigError(
                where,
                f"{label} returned targets for {', '.join(map(str, y)) or 'no task'} at item {i} and for "
                f"{', '.join(columns)} at item 0; every item needs the same tasks",
            )
        for task, value in y.items():
            try:
                t = torch.as_tensor(value)
            except (TypeError, ValueError, RuntimeError):
                raise ConfigError(
                    where,
                    f"{label} returned {type(value).__name__} as the target of task `{task}` at item {i}; "
                    "expected a tensor or a number",
                ) from None
            column = columns[str(task)]
            if column and t.shape != column[0].shape:
                raise ConfigError(
                    where,
                    f"{label} returned a target of shape {tuple(t.shape)} for task `{task}` at item {i} and "
                    f"{tuple(column[0].shape)} at item 0; every target of a task needs the same shape",
                )
            column.append(t)
    targets = {task: torch.stack(column) for task, column in columns.items()}
    for task, t in targets.items():
        check_target(t, task, where, label)
        check_spatial(t, shape, task, where, label)
    return shape, targets


def check_input_dtype(x: torch.Tensor, where: str, label: str, at: str) -> None:
    if x.dtype != torch.float32:
        raise ConfigError(
            where, f"{label} returned inputs of dtype {x.dtype}{at}; expected torch.float32 (the model's dtype)"
        )


def check_target(t: torch.Tensor, task: str, where: str, label: str) -> None:
    check_finite(
        t,
        where,
        f"{label} returned {{value}} as the target of task `{task}` at item {{index}}; targets must be finite "
        "(a NaN or infinite target makes the loss NaN)",
    )


def check_spatial(t: torch.Tensor, input_shape: tuple[int, ...], task: str, where: str, label: str) -> None:
    """A dense target (``(N, H, W)`` or ``(N, C, H, W)``) of an image input ``(C, H, W)`` has the
    input's height and width: a dense head predicts at the input's size."""
    if t.dim() < 3 or len(input_shape) != 3 or tuple(t.shape[-2:]) == input_shape[-2:]:
        return
    raise ConfigError(
        where,
        f"{label} returned targets of shape {tuple(t.shape)} for task `{task}`, with height and width "
        f"{tuple(t.shape[-2:])}; the inputs are {input_shape}, and a per-pixel target needs their height and width "
        f"{input_shape[-2:]}",
    )


def check_finite(t: torch.Tensor, where: str, message: str) -> None:
    """Raise ``message`` (with ``{value}`` and ``{index}``, the first bad row) when ``t`` holds a
    NaN or an infinity; rows are ``t``'s first dimension."""
    if not t.is_floating_point() or t.dim() == 0:
        return
    bad = ~torch.isfinite(t.reshape(t.shape[0], -1))
    rows = bad.any(1).nonzero()
    if len(rows):
        index = int(rows[0, 0])
        value = t.reshape(t.shape[0], -1)[index][bad[index]][0].item()
        raise ConfigError(where, message.format(value=value, index=index))


def _call(read: Any, where: str, what: str) -> Any:
    """``read()``, with an exception of user code reported in one line."""
    try:
        return read()
    except MTLSearchError:
        raise
    except (Exception, SystemExit) as err:
        raise raised(where, what, err) from err
