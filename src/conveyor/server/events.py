"""In-process events: every committed change that someone may be waiting for.

Writers never publish directly: they call `publish_after_commit(session, event)`, and
the event goes out only once that session's transaction has committed (and is dropped
if it rolls back), so a subscriber that reads the database on an event always finds
the change. Subscribers are asyncio consumers (WebSocket streams, long-polling agent
claims); publishing is safe from any thread (sync routes run in a thread pool).

Topics in use:
    queue          a job became claimable (new run, retry, requeue)
    run:<id>       the run, one of its jobs or steps changed status
    runs           any run changed status (dashboards, the tasks view)
    log:<step id>  the step's log grew (data: size, lines)
    agent:<id>     something for one agent (a cancel of a job it runs)

An event is a wake-up call with a small payload, not the data itself: a slow
subscriber whose queue overflows gets a single `overflow` event and must re-read the
state it follows (logs are read by offset from their files, so nothing is lost).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import event as sa_event
from sqlalchemy.orm import Session, sessionmaker

_PENDING = "conveyor.pending_events"
_BUS = "conveyor.bus"


@dataclass(frozen=True)
class Event:
    topic: str
    kind: str
    data: dict[str, Any] = field(default_factory=dict)


OVERFLOW = "overflow"


class Subscription:
    """Events of some topics, in order, until closed. Use as an async iterator."""

    def __init__(self, bus: EventBus, topics: frozenset[str], size: int) -> None:
        self._bus = bus
        self.topics = topics
        self._queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=size)
        self._overflowed = False

    def _deliver(self, item: Event) -> None:
        if self._overflowed:
            return
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self._overflowed = True

    async def get(self, within: float | None = None) -> Event | None:
        """The next event, or None after `within` seconds without one."""
        if self._overflowed and self._queue.empty():
            self._overflowed = False
            return Event(topic="*", kind=OVERFLOW)
        try:
            if within is None:
                return await self._queue.get()
            return await asyncio.wait_for(self._queue.get(), within)
        except TimeoutError:
            return None

    def get_pending(self) -> list[Event]:
        """The events delivered and not yet taken, without waiting (a burst of them is
        one wake-up for a subscriber that re-reads the state anyway); an overflow
        comes as one `overflow` event at the end."""
        pending: list[Event] = []
        while not self._queue.empty():
            pending.append(self._queue.get_nowait())
        if self._overflowed:
            self._overflowed = False
            pending.append(Event(topic="*", kind=OVERFLOW))
        return pending

    def close(self) -> None:
        self._bus._remove(self)

    async def __aiter__(self) -> AsyncIterator[Event]:
        while True:
            item = await self.get()
            if item is not None:
                yield item

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventBus:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_topic: dict[str, set[Subscription]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self.deliveries = 0
        """Deliveries so far (counted in the loop, each a batch of events): a reader that
        started when this was at least N has seen every change delivered by the Nth."""

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop subscribers live in; set at server start."""
        self._loop = loop

    def subscribe(self, topics: Iterable[str], size: int = 1000) -> Subscription:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        subscription = Subscription(self, frozenset(topics), size)
        with self._lock:
            for topic in subscription.topics:
                self._by_topic.setdefault(topic, set()).add(subscription)
        return subscription

    def _remove(self, subscription: Subscription) -> None:
        with self._lock:
            for topic in subscription.topics:
                subscribers = self._by_topic.get(topic)
                if subscribers is not None:
                    subscribers.discard(subscription)
                    if not subscribers:
                        del self._by_topic[topic]

    def publish(self, events: Iterable[Event]) -> None:
        """Deliver now (from any thread). Writers use `publish_after_commit` instead."""
        items = list(events)
        with self._lock:
            targets = [(e, list(self._by_topic.get(e.topic, ()))) for e in items]
        if not any(subs for _, subs in targets) or self._loop is None:
            return

        def deliver() -> None:
            self.deliveries += 1
            for item, subscribers in targets:
                for subscription in subscribers:
                    subscription._deliver(item)

        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            deliver()
        else:
            with contextlib.suppress(RuntimeError):  # loop closed at shutdown
                self._loop.call_soon_threadsafe(deliver)


def publish_after_commit(session: Session, *events: Event) -> None:
    """Queue events on the session; they go out when its transaction commits."""
    session.info.setdefault(_PENDING, []).extend(events)


def install(factory: sessionmaker[Session], bus: EventBus) -> None:
    """Make every session of `factory` publish its queued events to `bus` on commit."""
    factory.configure(info={_BUS: bus})

    @sa_event.listens_for(factory, "after_commit")
    def _after_commit(session: Session) -> None:
        pending = session.info.pop(_PENDING, None)
        target = session.info.get(_BUS)
        if pending and isinstance(target, EventBus):
            target.publish(pending)

    @sa_event.listens_for(factory, "after_soft_rollback")
    def _after_rollback(session: Session, previous_transaction: object) -> None:
        session.info.pop(_PENDING, None)
