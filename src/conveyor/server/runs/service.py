"""Triggering runs, reading them, cancelling and retrying them.

A trigger happens in two phases, so that no database transaction stays open while
git works:

1. git: the commit is resolved in the project's bare mirror and the pipeline file
   is read and validated at that commit (no database access);
2. database: the run gets the next number of its project, and the run, its jobs
   and their steps are written in the caller's transaction.

A pipeline file that cannot be used still records a run, in `error`, with one job
`pipeline` whose step `load` has a log saying file:line:column and what is wrong, so
the people who pushed see why nothing ran. A ref that does not exist records nothing.

Status changes go through `runs.state`; functions flush, the caller commits.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from conveyor.agent.checkout import CheckoutError, CommitInfo, MirrorCache
from conveyor.pipeline import Pipeline, PipelineError, TriggerContext, branch_matches
from conveyor.pipeline.plan import JobPlan, StepPlan
from conveyor.protocol.status import Status
from conveyor.server.agents import service as agents_service
from conveyor.server.config import Settings
from conveyor.server.db.base import utcnow
from conveyor.server.errors import ConflictError, InvalidInputError, NotFoundError
from conveyor.server.logs import service as logs_service
from conveyor.server.models.job import Job
from conveyor.server.models.project import Project
from conveyor.server.models.run import Run
from conveyor.server.projects import service as projects_service
from conveyor.server.projects.repository import ProjectRepository, readable_by
from conveyor.server.runs import state
from conveyor.server.runs.repository import RunFilter, RunRepository
from conveyor.server.runs.schemas import (
    JobRead,
    RunDetail,
    RunPage,
    RunSummary,
    StepRead,
    TaskRead,
    TasksView,
    TriggerRequest,
)
from conveyor.server.users.authorization import Action, Actor, authorize

DEFAULT_MAX_ATTEMPTS = 2
MAX_PER_PAGE = 100
PLANNING_JOB_NAME = "pipeline"
PLANNING_STEP_NAME = "load"
_NUMBERING_ATTEMPTS = 5


class RunNotFoundError(NotFoundError):
    code = "run_not_found"


class RunNotCancellableError(ConflictError):
    code = "run_not_cancellable"


class RunNotRetryableError(ConflictError):
    code = "run_not_retryable"


class RefNotFoundError(InvalidInputError):
    code = "ref_not_found"


class RepositoryUnreachableError(InvalidInputError):
    code = "repository_unreachable"


class BranchNotAllowedError(InvalidInputError):
    code = "branch_not_allowed"


class RunNumberingError(ConflictError):
    code = "run_numbering_conflict"


# --- triggering ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ResolvedCommit:
    """What git said about a trigger, before anything is written. Made by `resolve_ref`
    (outside any transaction), stored by `record_run`; webhooks use the pair to record a
    run of the exact commit a forge names, with the forge's message and author."""

    commit: CommitInfo
    pipeline: Pipeline | None
    problem: str | None
    """Why the pipeline cannot be used (file:line:column: what is wrong), or None."""


def _ref_to_resolve(project: Project, request: TriggerRequest) -> tuple[str, str | None]:
    """The full ref (or sha) to resolve and the branch it names, if any."""
    if request.sha is not None:
        return request.sha.lower(), None
    if request.tag is not None:
        return f"refs/tags/{request.tag}", None
    branch = request.branch if request.branch is not None else project.default_branch
    return f"refs/heads/{branch}", branch


def _check_branch_filter(project: Project, branch: str | None) -> None:
    patterns = projects_service.branch_patterns(project.branch_filter)
    if branch is None or not patterns or branch_matches(branch, patterns):
        return
    raise BranchNotAllowedError(
        f"branch {branch!r} is outside the branch filter of project {project.name!r} "
        f"({project.branch_filter!r}); trigger a branch that matches it, or change the "
        "filter (PATCH /api/v1/projects/{name} with branch_filter)",
        detail={"branch": branch, "branch_filter": project.branch_filter},
    )


def resolve_ref(settings: Settings, project: Project, ref: str) -> ResolvedCommit:
    """Resolve `ref` in the project's mirror and load the pipeline at that commit."""
    cache = MirrorCache(settings.repos_path)
    url = project.git_url
    try:
        cache.update(url)
    except CheckoutError as error:
        raise RepositoryUnreachableError(
            f"the repository of project {project.name!r} cannot be fetched: {error}",
            detail={"project": project.name},
        ) from error
    try:
        # The commit and the project's pipeline file in one git process.
        snapshot = cache.snapshot(url, ref, [project.pipeline_path], fetch=False)
    except CheckoutError as error:
        raise RefNotFoundError(
            str(error), detail={"project": project.name, "ref": ref.removeprefix("refs/heads/")}
        ) from error
    commit, read_file = snapshot.commit, snapshot.read_file

    # The readers load at the first pipeline read, not with the server (YAML, 2 MiB).
    from conveyor.pipeline.loading import load_pipeline

    try:
        pipeline = load_pipeline(
            read_file, pipeline_path=project.pipeline_path, build_command=project.build_command
        )
    except PipelineError as error:
        return ResolvedCommit(commit, None, str(error))
    except CheckoutError as error:
        return ResolvedCommit(commit, None, str(error))
    return ResolvedCommit(commit, pipeline, None)


def _build_hash(project: Project, number: int) -> str:
    """A hash unique to one build (AMS-Build's `{build_hash}`)."""
    seed = f"{project.id}:{project.name}:{number}:{utcnow().isoformat()}:{secrets.token_hex(8)}"
    return hashlib.sha256(seed.encode()).hexdigest()[:16]


def trigger(
    session: Session,
    settings: Settings,
    actor: Actor,
    project: Project,
    request: TriggerRequest,
) -> Run:
    """Record a run of `project` for `request` (developer role or more) and queue its jobs.

    Before git runs, this commits what the session holds (at most the request's own
    bookkeeping, such as a token's last use), so that no transaction is open during
    git; the run, its jobs and steps are then written in one new transaction, which the
    caller commits. Run numbers are taken under a lock on the project row, and the
    unique (project, number) constraint backs that up with a retry.

    Raises `BranchNotAllowedError` (a branch outside the branch filter),
    `RepositoryUnreachableError` and `RefNotFoundError` (nothing is recorded then).
    """
    authorize(actor, project, Action.TRIGGER)
    ref, branch = _ref_to_resolve(project, request)
    _check_branch_filter(project, branch)
    session.commit()

    resolved = resolve_ref(settings, project, ref)
    if branch is None and resolved.commit.branch is not None:
        branch = resolved.commit.branch
    return record_run(session, settings, actor, project, request, resolved, branch)


def record_run(
    session: Session,
    settings: Settings,
    actor: Actor,
    project: Project,
    request: TriggerRequest,
    resolved: ResolvedCommit,
    branch: str | None,
) -> Run:
    # The first statement of the transaction is this write, so on SQLite it waits for
    # the write lock instead of failing later on a stale read snapshot.
    ProjectRepository(session).lock_for_new_run(project.id)
    runs = RunRepository(session)
    for _ in range(_NUMBERING_ATTEMPTS):
        number = runs.next_number(project.id)
        run = Run(
            project_id=project.id,
            number=number,
            event=request.event,
            branch=branch,
            tag=resolved.commit.tag,
            commit_sha=resolved.commit.sha,
            commit_message=resolved.commit.message,
            commit_author=resolved.commit.author,
            actor_id=actor.user_id,
            actor_name=actor.name,
            variables=dict(request.variables),
            status=Status.QUEUED,
        )
        try:
            with session.begin_nested():
                runs.add(run)
        except IntegrityError:
            continue  # another trigger took this number; take the next one
        break
    else:
        raise RunNumberingError(
            f"could not number a new run of project {project.name!r} after "
            f"{_NUMBERING_ATTEMPTS} attempts (many triggers at once); try again"
        )

    if resolved.pipeline is None:
        _record_planning_failure(session, settings, run, resolved.problem or "")
        return run
    context = TriggerContext(
        event=request.event,
        branch=branch,
        tag=resolved.commit.tag,
        commit_sha=resolved.commit.sha,
        project=project.name,
        run_number=run.number,
        actor=actor.name,
        created=run.created_at,
        build_hash=_build_hash(project, run.number),
        default_image=None,
    )
    try:
        compiled = resolved.pipeline.compile(context)
    except PipelineError as error:
        _record_planning_failure(session, settings, run, str(error))
        return run
    if not compiled.jobs:
        state.skip_run(
            session, run, compiled.skipped_reason or "the pipeline has no job for this trigger"
        )
        return run
    for plan in compiled.jobs:
        job, _steps = runs.add_job(
            Job(
                run_id=run.id,
                name=plan.name,
                matrix=dict(plan.matrix),
                plan=plan.model_dump(mode="json"),
                labels=list(plan.labels),
                priority=request.priority,
                max_attempts=DEFAULT_MAX_ATTEMPTS,
                timeout_seconds=plan.timeout,
                status=Status.QUEUED,
            ),
            [step.name for step in plan.steps],
        )
        state.announce_queued(session, job)
    return run


def _record_planning_failure(session: Session, settings: Settings, run: Run, problem: str) -> None:
    """End `run` in `error` with one job `pipeline` whose step `load` logs the problem."""
    plan = JobPlan(name=PLANNING_JOB_NAME, steps=[StepPlan(name=PLANNING_STEP_NAME)])
    job, (step,) = RunRepository(session).add_job(
        Job(
            run_id=run.id,
            name=PLANNING_JOB_NAME,
            plan=plan.model_dump(mode="json"),
            max_attempts=0,
            status=Status.QUEUED,
        ),
        [PLANNING_STEP_NAME],
    )
    logs_service.write_message(session, settings, step, f"The pipeline cannot be used:\n{problem}")
    message = f"the pipeline cannot be used: {problem}"
    state.finish_step(session, step, Status.ERROR)
    state.fail_run(session, run, message)
    state.finish_job(session, job, Status.ERROR, message=message)


def job_spec_context(session: Session, job: Job) -> tuple[Run, Project]:
    """The run and project of `job`: what a JobSpec is built from."""
    run = RunRepository(session).get(job.run_id)
    if run is None:
        raise RunNotFoundError(f"job {job.id} belongs to run {job.run_id}, which is gone")
    project = ProjectRepository(session).get(run.project_id)
    if project is None:
        raise projects_service.ProjectNotFoundError(
            f"run {run.id} belongs to project {run.project_id}, which is gone"
        )
    return run, project


# --- reading ------------------------------------------------------------------------------


def _seconds_between(start: datetime | None, end: datetime | None) -> float | None:
    if start is None:
        return None
    return round(max(0.0, ((end or utcnow()) - start).total_seconds()), 3)


def summarize(run: Run, project_name: str) -> RunSummary:
    return RunSummary(
        id=run.id,
        project=project_name,
        number=run.number,
        event=run.event,
        branch=run.branch,
        tag=run.tag,
        commit_sha=run.commit_sha,
        commit_message=run.commit_message,
        commit_author=run.commit_author,
        created_by=run.actor_name,
        status=run.status,
        created_at=run.created_at,
        started_at=run.started_at,
        finished_at=run.finished_at,
        queued_seconds=_seconds_between(run.created_at, run.started_at),
        duration_seconds=(
            _seconds_between(run.started_at, run.finished_at)
            if run.started_at is not None
            else None
        ),
        error_message=run.error_message,
    )


def get_run_for(session: Session, actor: Actor, run_id: int, action: Action) -> tuple[Run, Project]:
    """The run `run_id` and its project, if `actor` may do `action` in that project."""
    run = RunRepository(session).get(run_id)
    project = ProjectRepository(session).get(run.project_id) if run is not None else None
    if run is None or project is None:
        raise RunNotFoundError(
            f"there is no run with id {run_id}; GET /api/v1/runs lists the runs you can see",
            detail={"run_id": run_id},
        )
    authorize(actor, project, action)
    return run, project


def describe_run(
    session: Session, run: Run, project: Project, *, settings: Settings | None = None
) -> RunDetail:
    """The run with its jobs and steps; with `settings`, queued jobs also say why they
    wait (`waiting_reason`)."""
    runs = RunRepository(session)
    jobs = runs.jobs_of_run(run.id)
    waiting = agents_service.explain_waiting(session, settings, jobs) if settings else {}
    steps_by_job: dict[int, list[StepRead]] = {job.id: [] for job in jobs}
    for step in runs.steps_of_jobs([job.id for job in jobs]):
        steps_by_job[step.job_id].append(
            StepRead(
                id=step.id,
                index=step.index,
                name=step.name,
                status=step.status,
                exit_code=step.exit_code,
                started_at=step.started_at,
                finished_at=step.finished_at,
                log_lines=step.log_line_count,
                log_bytes=step.log_byte_size,
            )
        )
    agents = runs.agent_names(sorted({job.agent_id for job in jobs if job.agent_id is not None}))
    return RunDetail(
        **summarize(run, project.name).model_dump(),
        variables=dict(run.variables),
        jobs=[
            JobRead(
                id=job.id,
                name=job.name,
                matrix=dict(job.matrix),
                status=job.status,
                labels=list(job.labels),
                priority=job.priority,
                attempts=job.attempts,
                max_attempts=job.max_attempts,
                agent=agents.get(job.agent_id) if job.agent_id is not None else None,
                queued_at=job.queued_at,
                started_at=job.started_at,
                finished_at=job.finished_at,
                duration_seconds=(
                    _seconds_between(job.started_at, job.finished_at)
                    if job.started_at is not None
                    else None
                ),
                error_message=job.error_message,
                steps=steps_by_job[job.id],
                waiting_reason=waiting.get(job.id),
            )
            for job in jobs
        ],
    )


def list_runs(
    session: Session, actor: Actor, run_filter: RunFilter, *, page: int, per_page: int
) -> RunPage:
    """Runs of the projects `actor` may read, newest first, one page of them."""
    projects_service.require_list_access(actor)
    if page < 1 or not 1 <= per_page <= MAX_PER_PAGE:
        raise InvalidInputError(
            f"page must be 1 or more and per_page 1 to {MAX_PER_PAGE} "
            f"(got page={page}, per_page={per_page})",
            detail={"page": page, "per_page": per_page},
        )
    if run_filter.project is not None:
        # An unknown or unreadable project is an error, not an empty page.
        projects_service.get_project_for(session, actor, run_filter.project, Action.READ)
    rows, total = RunRepository(session).page(
        readable_by(actor), run_filter, offset=(page - 1) * per_page, limit=per_page
    )
    return RunPage(
        items=[summarize(run, name) for run, name in rows],
        page=page,
        per_page=per_page,
        total=total,
    )


def _task(run: Run, project_name: str) -> TaskRead:
    return TaskRead(
        run_id=run.id,
        project=project_name,
        number=run.number,
        status=run.status,
        branch=run.branch,
        tag=run.tag,
        commit_sha=run.commit_sha,
        commit_message=run.commit_message,
        created_by=run.actor_name,
        created_at=run.created_at,
        started_at=run.started_at,
    )


def tasks(
    session: Session,
    actor: Actor,
    run_filter: RunFilter,
    *,
    include: Sequence[Status] = (Status.RUNNING, Status.QUEUED),
) -> TasksView:
    """The runs running (`active`) and waiting (`queued`), oldest first, among the
    projects `actor` may read."""
    projects_service.require_list_access(actor)
    if run_filter.project is not None:
        projects_service.get_project_for(session, actor, run_filter.project, Action.READ)
    runs = RunRepository(session)
    readable = readable_by(actor)

    def of(status: Status) -> list[TaskRead]:
        if status not in include:
            return []
        return [_task(run, name) for run, name in runs.with_status(readable, status, run_filter)]

    return TasksView(active=of(Status.RUNNING), queued=of(Status.QUEUED))


# --- cancel and retry ---------------------------------------------------------------------


def cancel(session: Session, actor: Actor, run_id: int) -> Run:
    """Cancel a queued or running run (developer role or more): queued jobs leave the
    queue, running ones are stopped by their agents."""
    run, project = get_run_for(session, actor, run_id, Action.CANCEL)
    if run.status.finished:
        raise RunNotCancellableError(
            f"run {project.name} #{run.number} (id {run.id}) already finished as "
            f"{run.status}; only queued or running runs can be cancelled (retry it instead: "
            f"POST /api/v1/runs/{run.id}/retry)",
            detail={"run_id": run.id, "status": str(run.status)},
        )
    state.cancel_run(session, run)
    return run


def retry(session: Session, settings: Settings, actor: Actor, run_id: int) -> Run:
    """A new run of a finished run's commit, ref and variables (developer role or more);
    the actor is the one who retries. The branch filter applies as for any trigger."""
    run, project = get_run_for(session, actor, run_id, Action.RETRY)
    if not run.status.finished:
        raise RunNotRetryableError(
            f"run {project.name} #{run.number} (id {run.id}) is still {run.status}; only a "
            f"finished run can be retried (cancel it first: POST /api/v1/runs/{run.id}/cancel)",
            detail={"run_id": run.id, "status": str(run.status)},
        )
    priorities = [job.priority for job in RunRepository(session).jobs_of_run(run.id)]
    request = TriggerRequest(
        sha=run.commit_sha,
        variables={name: str(value) for name, value in run.variables.items()},
        priority=max(priorities, default=0),
        event=run.event,
    )
    return _retrigger(session, settings, actor, project, request, run)


def _retrigger(
    session: Session,
    settings: Settings,
    actor: Actor,
    project: Project,
    request: TriggerRequest,
    original: Run,
) -> Run:
    # The commit is resolved by sha; the ref it ran for is carried over, so the new
    # run says the same branch or tag as the one retried.
    authorize(actor, project, Action.TRIGGER)
    _check_branch_filter(project, original.branch)
    branch, tag = original.branch, original.tag
    session.commit()
    resolved = resolve_ref(settings, project, request.sha or original.commit_sha)
    commit = CommitInfo(
        sha=resolved.commit.sha,
        branch=branch,
        tag=tag,
        message=resolved.commit.message,
        author=resolved.commit.author,
        author_name=resolved.commit.author_name,
        author_email=resolved.commit.author_email,
        committed_at=resolved.commit.committed_at,
    )
    return record_run(
        session,
        settings,
        actor,
        project,
        request,
        ResolvedCommit(commit, resolved.pipeline, resolved.problem),
        branch,
    )
