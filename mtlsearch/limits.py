"""Generous bounds on what a space may ask for, checked before anything is read, built or allocated.

They turn typos (``epochs: 1000000``) and hostile files (alias bombs, deep nesting) into one clear
error instead of a hang, a memory error or a traceback. Raise one on purpose with the environment
variable ``MTLSEARCH_LIMITS``, e.g. ``MTLSEARCH_LIMITS=epochs=20000,width=131072``; the README's
"Bounds" table lists them.
"""

from __future__ import annotations

import os

from .errors import ConfigError, did_you_mean, show

ENV = "MTLSEARCH_LIMITS"

LIMITS: dict[str, int] = {
    # A YAML file, checked while it is read (before any value is used).
    "file_bytes": 1_048_576,  # size of the file
    "nesting": 64,  # lists and mappings inside one another
    "list_items": 10_000,  # entries of one list or mapping (also in a space given as a dict)
    "yaml_values": 100_000,  # values in the file once aliases (`*name`) are expanded
    "name_chars": 256,  # length of a name: study, task, metric, family, weighting...
    # Sizes, checked before anything is allocated.
    "epochs": 10_000,  # search_space.training.epochs; adashare_learned.warmup_epochs, policy_epochs
    "width": 65_536,  # backbone.width (mlp)
    "channels": 65_536,  # backbone.channels (cnn)
    "depth": 1_000,  # backbone.depth
    "n_samples": 10_000_000,  # data.n_train, n_val, n_test of the built-in benchmarks
    "input_dim": 65_536,  # data.input_dim (mmoe_synthetic)
    "num_sines": 1_000,  # data.num_sines (mmoe_synthetic)
    "num_classes": 1_000_000,  # tasks[i].num_classes
    "output_dim": 65_536,  # tasks[i].output_dim
    "modules": 1_000,  # search_space.routing.modules
    "range_steps": 1_000_000_000,  # (high - low) / step of a range
    "workers": 1_024,  # run.workers (local processes)
    "threads": 1_024,  # run.threads (torch threads per process)
}


def overrides() -> dict[str, int]:
    """The bounds set in ``$MTLSEARCH_LIMITS`` (``NAME=N,NAME=N``)."""
    out: dict[str, int] = {}
    for item in os.environ.get(ENV, "").split(","):
        name, sep, value = (s.strip() for s in item.partition("="))
        if not (name or sep or value):
            continue
        if name not in LIMITS:
            raise ConfigError(
                ENV, f"unknown bound {show(name)}; choose one of: {', '.join(LIMITS)}{did_you_mean(name, LIMITS)}"
            )
        if not (value.isascii() and value.isdigit()) or int(value) < 1:
            raise ConfigError(ENV, f"expected NAME=INTEGER >= 1 (e.g. {ENV}=epochs=20000), found {show(item.strip())}")
        out[name] = int(value)
    return out


def limit(name: str) -> int:
    """The bound ``name``: its value in ``$MTLSEARCH_LIMITS``, else ``LIMITS[name]``."""
    return overrides().get(name, LIMITS[name])


def how_to_raise(name: str) -> str:
    """The note that ends every error about a bound."""
    return f"(a bound against mistakes; set {ENV}={name}=N to raise it on purpose)"


def check_bound(value: int, name: str, path: str, minimum: int | None = None) -> None:
    """Refuse an integer ``value`` above ``limit(name)``, naming the field, the value, the bound
    and how to raise it."""
    bound = limit(name)
    if value > bound:
        span = f"in [{minimum}, {bound}]" if minimum is not None else f"<= {bound}"
        raise ConfigError(path, f"expected an integer {span}, found {show(value)} {how_to_raise(name)}")
