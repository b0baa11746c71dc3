"""The student status lifecycle: a pure state machine.

No I/O and no framework imports, so every rule is testable on its own::

    >>> decide("enrolled", "active")
    Decision(outcome='apply', from_status='enrolled', to_status='active')
    >>> decide("completed", "active").outcome
    'reject'
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

ENROLLED = "enrolled"
ACTIVE = "active"
SUSPENDED = "suspended"
COMPLETED = "completed"
WITHDRAWN = "withdrawn"

INITIAL_STATUS = ENROLLED

TRANSITIONS: dict[str, frozenset[str]] = {
    ENROLLED: frozenset({ACTIVE, WITHDRAWN}),
    ACTIVE: frozenset({SUSPENDED, COMPLETED, WITHDRAWN}),
    SUSPENDED: frozenset({ACTIVE, WITHDRAWN}),
    COMPLETED: frozenset(),
    WITHDRAWN: frozenset(),
}

STATUSES: tuple[str, ...] = tuple(TRANSITIONS)
FINAL_STATUSES = frozenset(s for s, targets in TRANSITIONS.items() if not targets)

INVALID_TRANSITION = "INVALID_TRANSITION"


@dataclass(frozen=True)
class Decision:
    outcome: Literal["apply", "noop", "reject"]
    from_status: str
    to_status: str

    @property
    def error(self) -> str | None:
        return INVALID_TRANSITION if self.outcome == "reject" else None


def is_allowed(from_status: str, to_status: str) -> bool:
    return to_status in TRANSITIONS.get(from_status, ())


@lru_cache(maxsize=256)  # a handful of pairs, asked once per request of every batch
def decide(current: str, target: str) -> Decision:
    """What to do with a request to move from ``current`` to ``target``.

    The same status is a no-op, an allowed move is applied, anything else
    (including an unknown status) is rejected.
    """
    if current == target:
        return Decision("noop", current, target)
    if is_allowed(current, target):
        return Decision("apply", current, target)
    return Decision("reject", current, target)


def describe_rejection(current: str, target: str) -> str:
    allowed = sorted(TRANSITIONS.get(current, ()))
    if not allowed:
        return f"'{current}' is final; no transition to '{target}' is possible"
    return f"cannot go from '{current}' to '{target}'; allowed: {', '.join(allowed)}"
