"""`/metrics` for Prometheus: the state of the queue, the runs and the agents, read from
the database at each scrape (so every server replica answers the same), and the
process's own figures.

Administrators only: scrape with an admin's API token (`bearer_token` in Prometheus'
scrape config). prometheus-client loads on the first scrape, not at start."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from fastapi import APIRouter, Request, Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from conveyor import __version__
from conveyor.protocol.status import Status
from conveyor.server.agents.service import agent_status
from conveyor.server.config import Settings
from conveyor.server.db.base import utcnow
from conveyor.server.deps import DbSession, RequestActor
from conveyor.server.errors import NotAuthenticatedError, PermissionDeniedError
from conveyor.server.models.agent import Agent
from conveyor.server.models.job import Job
from conveyor.server.models.run import Run

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import Collector

router = APIRouter(tags=["metrics"])


class StateCollector:
    """Collects at scrape time from one short read transaction."""

    def __init__(self, factory: sessionmaker[Session], settings: Settings) -> None:
        self.factory = factory
        self.settings = settings

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily

        now = utcnow()
        with self.factory() as session:
            runs = dict(
                session.execute(select(Run.status, func.count()).group_by(Run.status)).all()
            )
            jobs = dict(
                session.execute(select(Job.status, func.count()).group_by(Job.status)).all()
            )
            oldest = session.scalar(
                select(func.min(Job.queued_at)).where(Job.status == Status.QUEUED)
            )
            agents = list(session.scalars(select(Agent)))
        yield InfoMetricFamily("conveyor_build", "Conveyor's version.", {"version": __version__})
        run_family = GaugeMetricFamily(
            "conveyor_runs", "Runs in the database, by status.", labels=["status"]
        )
        job_family = GaugeMetricFamily(
            "conveyor_jobs", "Jobs in the database, by status.", labels=["status"]
        )
        for status in Status:
            run_family.add_metric([str(status)], float(runs.get(status, 0)))
            job_family.add_metric([str(status)], float(jobs.get(status, 0)))
        yield run_family
        yield job_family
        yield GaugeMetricFamily(
            "conveyor_queue_oldest_seconds",
            "How long the oldest queued job has waited (0 when none waits).",
            value=0.0 if oldest is None else max(0.0, (now - oldest).total_seconds()),
        )
        by_status: dict[str, int] = {"online": 0, "offline": 0, "disabled": 0}
        slots = busy = 0
        for agent in agents:
            state = str(agent_status(self.settings, agent, now))
            by_status[state] = by_status.get(state, 0) + 1
            if state == "online":
                slots += agent.capacity
                busy += agent.running
        agent_family = GaugeMetricFamily("conveyor_agents", "Agents, by status.", labels=["status"])
        for state, count in sorted(by_status.items()):
            agent_family.add_metric([state], float(count))
        yield agent_family
        slot_family = GaugeMetricFamily(
            "conveyor_agent_slots", "Job slots of the online agents.", labels=["state"]
        )
        slot_family.add_metric(["total"], float(slots))
        slot_family.add_metric(["busy"], float(busy))
        yield slot_family


def _registry(request: Request) -> CollectorRegistry:
    registry: CollectorRegistry | None = getattr(request.app.state, "metrics_registry", None)
    if registry is None:
        from prometheus_client import CollectorRegistry, GCCollector, ProcessCollector

        registry = CollectorRegistry()
        collector: Collector = StateCollector(
            request.app.state.read_session_factory, request.app.state.settings
        )
        registry.register(collector)
        ProcessCollector(registry=registry)
        GCCollector(registry=registry)
        request.app.state.metrics_registry = registry
    return registry


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request, actor: RequestActor, _session: DbSession) -> Response:
    """The Prometheus text format (administrators only)."""
    if actor.is_anonymous:
        raise NotAuthenticatedError(
            "/metrics needs an administrator's API token: `Authorization: Bearer <token>` "
            "(POST /api/v1/user/tokens as an administrator makes one)"
        )
    if not actor.is_admin:
        raise PermissionDeniedError(f"{actor.name!r} is not an administrator; /metrics is for them")
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return Response(generate_latest(_registry(request)), media_type=CONTENT_TYPE_LATEST)
