"""The one rule tuning and calibration share: meet the target with confidence, else stay near the ceiling."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from index_builder.recall_target import RecallEstimate, TargetRule, outcome


@dataclass(frozen=True)
class Config:
    cost: int
    recall: float
    meets_target: bool


def test_meeting_the_target_needs_the_recall_less_z_standard_errors() -> None:
    estimate = RecallEstimate.of(np.array([1.0, 0.8] * 50))  # mean 0.9, standard error 0.01
    assert estimate.mean == pytest.approx(0.9) and estimate.standard_error == pytest.approx(0.01005, abs=1e-5)
    assert TargetRule(0.88).meets(estimate) and not TargetRule(0.89).meets(estimate)
    assert TargetRule(0.89, confidence_z=0.0).meets(estimate)


def test_eligible_are_those_meeting_else_those_near_the_ceiling() -> None:
    rule = TargetRule(0.9, ceiling_tolerance=0.01)
    met = [Config(1, 0.85, False), Config(2, 0.91, True), Config(3, 0.95, True)]
    assert rule.eligible(met) == met[1:]
    plateau = [Config(1, 0.70, False), Config(2, 0.792, False), Config(4, 0.797, False), Config(8, 0.799, False)]
    assert min(rule.eligible(plateau), key=lambda c: c.cost).cost == 2  # not 8 leaves for +0.007
    with pytest.raises(ValueError, match="no configuration"):
        rule.eligible([])


def test_outcome_names_the_best_reachable_recall_and_its_size() -> None:
    rule = TargetRule(0.9)
    configs = [Config(64, 0.84, False), Config(128, 0.87, False)]
    missed = outcome(rule, configs, configs[1], lambda c: c.cost)
    assert missed.message == "target missed: best reachable 0.8700 at 128 B/item"
    assert missed.report()["target_met"] is False and missed.report()["target_message"] == missed.message
    assert outcome(rule, [Config(64, 0.95, True)], Config(64, 0.95, True), lambda c: c.cost).report() == {
        "target_recall": 0.9,
        "target_met": True,
    }


@pytest.mark.parametrize("change", [{"target": 0.0}, {"target": 1.1}, {"ceiling_tolerance": 1.0}, {"confidence_z": -1}])
def test_bad_rules_are_refused(change: dict) -> None:
    with pytest.raises(ValueError):
        TargetRule(**{"target": 0.9, **change})
