"""The status lifecycle against a table written from PRODUCT.md, not from the code."""

from __future__ import annotations

from itertools import product

import pytest

from services import lifecycle

STATUSES = ("enrolled", "active", "suspended", "completed", "withdrawn")

# PRODUCT.md: enrolled → active | withdrawn; active → suspended | completed | withdrawn;
# suspended → active | withdrawn; completed and withdrawn are final.
ALLOWED = {
    ("enrolled", "active"),
    ("enrolled", "withdrawn"),
    ("active", "suspended"),
    ("active", "completed"),
    ("active", "withdrawn"),
    ("suspended", "active"),
    ("suspended", "withdrawn"),
}


def expected_outcome(current: str, target: str) -> str:
    if current == target:
        return "noop"
    return "apply" if (current, target) in ALLOWED else "reject"


def test_statuses_initial_and_final():
    assert set(lifecycle.STATUSES) == set(STATUSES)
    assert lifecycle.INITIAL_STATUS == "enrolled"
    assert set(lifecycle.FINAL_STATUSES) == {"completed", "withdrawn"}


@pytest.mark.parametrize(("current", "target"), list(product(STATUSES, STATUSES)))
def test_decide_every_pair(current, target):
    outcome = expected_outcome(current, target)

    decision = lifecycle.decide(current, target)

    assert (decision.outcome, decision.from_status, decision.to_status) == (outcome, current, target)
    assert decision.error == ("INVALID_TRANSITION" if outcome == "reject" else None)
    assert lifecycle.is_allowed(current, target) is (outcome == "apply")


@pytest.mark.parametrize(("current", "target"), [("enrolled", "graduated"), ("graduated", "active"), ("", "active")])
def test_unknown_status_is_rejected(current, target):
    decision = lifecycle.decide(current, target)

    assert decision.outcome == "reject"
    assert decision.error == "INVALID_TRANSITION"
    assert not lifecycle.is_allowed(current, target)


@pytest.mark.parametrize(
    ("current", "target", "message"),
    [
        ("completed", "active", "'completed' is final; no transition to 'active' is possible"),
        ("withdrawn", "enrolled", "'withdrawn' is final; no transition to 'enrolled' is possible"),
        ("enrolled", "completed", "cannot go from 'enrolled' to 'completed'; allowed: active, withdrawn"),
        ("suspended", "completed", "cannot go from 'suspended' to 'completed'; allowed: active, withdrawn"),
        ("active", "enrolled", "cannot go from 'active' to 'enrolled'; allowed: completed, suspended, withdrawn"),
    ],
)
def test_describe_rejection(current, target, message):
    assert lifecycle.describe_rejection(current, target) == message
