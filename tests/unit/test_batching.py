"""What a batched handler's deliveries carry: each item keeps its own correlation id, else takes its message's."""

from __future__ import annotations

from services.infra.batching import Delivery


def test_items_take_their_own_messages_correlation_id_where_they_have_none():
    traceparent = f"00-{'1' * 32}-{'2' * 16}-01"
    delivery = Delivery({"requests": []}, {"correlation_id": "message-2", "traceparent": traceparent})
    items = [{"student_id": 1, "correlation_id": "own"}, {"student_id": 2}, {"student_id": 3, "correlation_id": None}]

    stamped = delivery.stamped(items)

    assert [item["correlation_id"] for item in stamped] == ["own", "message-2", "message-2"]
    assert all("traceparent" not in item for item in stamped), "traces off: no traceparent is copied"
    assert items[1] == {"student_id": 2}, "the payload itself is left as it came"
