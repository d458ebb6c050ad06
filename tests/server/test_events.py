"""The in-process event bus: subscriptions and what they are handed."""

from __future__ import annotations

import asyncio

from conveyor.server.events import OVERFLOW, Event, EventBus


class TestGetPending:
    def test_hands_every_waiting_event_in_order_without_waiting(self) -> None:
        async def scenario() -> tuple[list[Event], list[Event]]:
            bus = EventBus()
            with bus.subscribe(["log:1"]) as subscription:
                for size in (1, 2, 3):
                    bus.publish([Event("log:1", "log.append", {"size": size})])
                first = await subscription.get(within=1)
                assert first is not None
                return [first], subscription.get_pending()

        taken, pending = asyncio.run(scenario())
        assert [event.data["size"] for event in taken + pending] == [1, 2, 3]

    def test_nothing_waiting_is_an_empty_list(self) -> None:
        async def scenario() -> list[Event]:
            with EventBus().subscribe(["log:1"]) as subscription:
                return subscription.get_pending()

        assert asyncio.run(scenario()) == []

    def test_an_overflow_comes_last_as_one_overflow_event(self) -> None:
        async def scenario() -> list[Event]:
            bus = EventBus()
            with bus.subscribe(["log:1"], size=2) as subscription:
                for size in range(5):
                    bus.publish([Event("log:1", "log.append", {"size": size})])
                return subscription.get_pending()

        pending = asyncio.run(scenario())
        assert [event.kind for event in pending] == ["log.append", "log.append", OVERFLOW]
