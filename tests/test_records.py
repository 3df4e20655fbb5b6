"""What a study stores is typed: the records round-trip, the README lists exactly their fields,
and a real study writes nothing else."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mtlsearch.search._records import STUDY_PREFIX, StudyRecord, TrialRecord, markdown, write_trial

README = Path(__file__).parents[1] / "README.md"


def test_readme_lists_the_record_fields():
    text = README.read_text()
    section = re.search(r"<!-- records:begin[^>]*-->\n(.*?)<!-- records:end -->", text, re.S)
    assert section, "README has no generated records section"
    assert section.group(1) == markdown(), "README is stale: regenerate it from mtlsearch.search._records.markdown()"


def test_records_round_trip_and_refuse_unknown_fields():
    record = TrialRecord(run_id="0123456789abcdef", seed=3, delta_mtl=1.5)
    assert TrialRecord.from_attrs({**record.to_attrs(), "unrelated": 1}) == record
    study = StudyRecord(seed=1, objectives=["delta_mtl"])
    assert study.to_attrs() == {"mtlsearch.seed": 1, "mtlsearch.objectives": ["delta_mtl"]}
    assert StudyRecord.from_attrs(study.to_attrs()) == study
    with pytest.raises(TypeError, match="bogus"):
        write_trial(object(), bogus=1)
    with pytest.raises(KeyError, match="unknown study record field `bogus`"):
        StudyRecord.key("bogus")


@pytest.mark.slow
def test_a_real_study_stores_only_record_fields(tmp_path):
    import optuna

    import mtlsearch
    from conftest import TINY_SPACE

    space = {**TINY_SPACE, "run": {**TINY_SPACE["run"], "n_trials": 2, "storage": f"sqlite:///{tmp_path}/r.db"}}
    problem, run = mtlsearch.load(space)
    study = mtlsearch.run_search(problem, run)
    study = optuna.load_study(study_name=study.study_name, storage=run.storage)
    assert {k[len(STUDY_PREFIX):] for k in study.user_attrs} <= set(StudyRecord.KEYS)
    assert all(k.startswith(STUDY_PREFIX) for k in study.user_attrs)
    for trial in study.trials:
        assert set(trial.user_attrs) <= set(TrialRecord.KEYS)
