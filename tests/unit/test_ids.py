"""Time-ordered ids for rows written in bulk."""

from __future__ import annotations

import time
import uuid

from services.infra.ids import uuid7, uuid7_texts


def test_a_version_7_rfc_9562_uuid_with_the_time_in_its_first_48_bits():
    before = time.time_ns() // 1_000_000
    made = uuid7()
    after = time.time_ns() // 1_000_000
    assert made.version == 7 and made.variant == uuid.RFC_4122
    assert before <= made.int >> 80 <= after


def test_ids_made_one_after_another_sort_in_that_order_as_strings_too():
    made = [uuid7() for _ in range(20_000)]  # several per millisecond, past the 12-bit counter too
    assert len(set(made)) == len(made)
    assert made == sorted(made)
    assert [str(u) for u in made] == sorted(str(u) for u in made)  # the column is a string


def test_ids_made_together_are_version_7_texts_in_order_after_those_made_before():
    before = str(uuid7())
    made = uuid7_texts(10_000) + uuid7_texts(3)
    assert len(set(made)) == len(made)
    assert [before, *made] == sorted([before, *made])
    parsed = [uuid.UUID(text) for text in made]
    assert all(u.version == 7 and u.variant == uuid.RFC_4122 for u in parsed)
    assert [str(u) for u in parsed] == made
