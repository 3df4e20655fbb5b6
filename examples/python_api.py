"""The Python API end to end: search, read the front, export, rebuild, retrain.

    python examples/python_api.py            # about a minute on 2 CPU cores
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import mtlsearch
from mtlsearch.search import results


def main() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="mtlsearch-example-"))
    problem, run = mtlsearch.load(Path(__file__).parents[1] / "search_spaces" / "multidigits.yaml")
    run = run.replace(study="api-example", storage=f"sqlite:///{workdir}/example.db", n_trials=6)

    study = mtlsearch.run_search(problem, run, mtlsearch.Progress("normal"))
    print(results.format_report(results.report(study)))

    trial = results.pick(study, "knee")
    config = results.export_config(study, trial, run.storage)
    results.write_yaml(config, workdir / "knee.yaml")
    model = mtlsearch.load_exported(workdir / "knee.yaml")
    print(f"rebuilt trial #{trial.number}: {sum(p.numel() for p in model.parameters()):,} parameters")
    print("\n".join(config["architecture"]["description"]))

    retrained = mtlsearch.retrain(workdir / "knee.yaml", seeds=[0, 1], device=run.device)
    print(results.format_retrain(retrained))


if __name__ == "__main__":
    main()
