"""How a step's follower takes its wake-ups: appends are gathered for a moment into one
read; a status change is never held back (a step's start and end reach viewers at once)."""

from __future__ import annotations

import asyncio

import pytest

from conveyor.server.events import Event, EventBus
from conveyor.server.logs import streams

LOG = Event(topic="log:7", kind="appended")
STATUS = Event(topic="run:3", kind="status")


async def _gathered(later: list[Event], *, first: Event | None = LOG) -> list[Event]:
    """What `_coalesced` returns after `first` when `later` are published one loop turn
    apart."""
    bus = EventBus()
    with bus.subscribe(["log:7", "run:3"]) as subscription:

        async def publish() -> None:
            for event in later:
                await asyncio.sleep(0)
                bus.publish([event])

        publishing = asyncio.create_task(publish())
        try:
            events = await asyncio.wait_for(streams._coalesced(subscription, first), 30)
        finally:
            await publishing
        return events


@pytest.fixture(autouse=True)
def long_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    # Long enough that returning at all shows whether the wait was cut short: a test
    # that waited it out would take minutes and fail on wait_for's 30 s.
    monkeypatch.setattr(streams, "COALESCE_SECONDS", 120.0)


def test_a_status_change_ends_the_wait_after_appends() -> None:
    events = asyncio.run(_gathered([LOG, LOG, STATUS]))
    assert events == [LOG, LOG, STATUS]


def test_a_status_change_is_read_without_waiting() -> None:
    events = asyncio.run(_gathered([], first=STATUS))
    assert events == []


def test_appends_alone_are_gathered_for_the_whole_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(streams, "COALESCE_SECONDS", 0.2)
    events = asyncio.run(_gathered([LOG, LOG, LOG]))
    assert events == [LOG, LOG, LOG]
