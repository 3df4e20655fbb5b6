"""The early-stopping rules as pure functions, on hand-made proxies."""

from __future__ import annotations

from mtlsearch.search._early_stopping import asha_stop, median_stop

OTHERS = [[1.0, 2.0, 3.0], [2.0, 4.0], [3.0], [5.0, 6.0, 7.0]]  # proxies per epoch of 4 trials


def test_median_rule():
    # epoch 1: values 1, 2, 3, 5 -> median 2.5
    assert median_stop(2.0, 1, OTHERS, min_trials=4, min_epochs=1) == 2.5
    assert median_stop(2.5, 1, OTHERS, min_trials=4, min_epochs=1) is None
    # epoch 2: values 2, 4, 6 -> median 4; too few trials when 4 are required
    assert median_stop(3.0, 2, OTHERS, min_trials=3, min_epochs=1) == 4.0
    assert median_stop(3.0, 2, OTHERS, min_trials=4, min_epochs=1) is None
    assert median_stop(0.0, 1, OTHERS, min_trials=1, min_epochs=2) is None  # before min_epochs


def test_asha_rule_keeps_the_top_third_at_rung_epochs():
    # rungs with min_epochs 1 and eta 3: epochs 1, 3, 9. Epoch 1: 5, 3, 2, 1 -> top third = the
    # best ceil(4/3) = 2 -> cutoff 3
    assert asha_stop(2.9, 1, OTHERS, min_trials=4, min_epochs=1) == 3.0
    assert asha_stop(3.0, 1, OTHERS, min_trials=4, min_epochs=1) is None
    assert asha_stop(-9.0, 2, OTHERS, min_trials=1, min_epochs=1) is None  # epoch 2 is no rung
    # epoch 3: 7, 3 -> cutoff = best ceil(2/3) = 1 -> 7
    assert asha_stop(6.0, 3, OTHERS, min_trials=2, min_epochs=1) == 7.0
    assert asha_stop(6.0, 3, OTHERS, min_trials=3, min_epochs=1) is None
    # min_epochs 2: rungs 2, 6 -> epoch 2 values 2, 4, 6 -> cutoff 6
    assert asha_stop(5.0, 2, OTHERS, min_trials=3, min_epochs=2) == 6.0
