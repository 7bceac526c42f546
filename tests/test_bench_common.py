"""The common measurement format of `benchmarks/common.py`: what `record` writes always passes
`validate`, however small the baseline, and a ratio that does not match is refused."""

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import common  # noqa: E402


@pytest.mark.parametrize("value, baseline", [(0.0500894, 0.00033601), (4210.3, 3120.8), (3.2e-7, 1.7e-9),
                                             (2_500_000.0, 123.4)])
def test_a_recorded_ratio_is_its_value_over_its_baseline(value, baseline):
    entry = common.record("b", "m", "a", value, "s", baseline="base", baseline_value=baseline)
    assert common.validate(entry) is entry
    assert entry["ratio"] == pytest.approx(value / baseline, rel=1e-6)
    assert entry["value"] == pytest.approx(value, rel=1e-6)
    assert entry["baseline_value"] == pytest.approx(baseline, rel=1e-6)


def test_a_ratio_that_is_not_value_over_baseline_is_refused():
    entry = common.record("b", "m", "a", 2.0, "s", baseline="base", baseline_value=1.0)
    entry["ratio"] = 2.1
    with pytest.raises(ValueError, match=r"ratio 2.1 is not value / baseline_value = 2.0"):
        common.validate(entry)
