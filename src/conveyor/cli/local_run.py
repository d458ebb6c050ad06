"""What `conveyor exec` does: check out, load the pipeline, run its jobs with a backend
and show them on the terminal (rich). Imported only when the command runs."""

from __future__ import annotations

import asyncio
import getpass
import os
import secrets as random
import shutil
import signal
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import typer
from rich.console import Console
from rich.table import Table

from conveyor.agent.backends.base import Backend, BackendError
from conveyor.agent.backends.registry import create_backend, default_backend_name
from conveyor.agent.checkout import CheckoutError, CommitInfo, MirrorCache, copy_working_tree
from conveyor.agent.engine import JobResult, JobRunner, RunFacts, StepResult
from conveyor.pipeline import PipelineError, TriggerContext, load_pipeline
from conveyor.pipeline.plan import JobPlan, NetworkMode, StepPlan
from conveyor.protocol.status import Status

EXIT_CODES = {
    Status.SUCCESS: 0,
    Status.WARNING: 0,
    Status.SKIPPED: 0,
    Status.FAILURE: 1,
    Status.ERROR: 2,
    Status.CANCELLED: 130,
}
# When several jobs ran, the worst of them decides the exit code.
SEVERITY = [
    Status.SUCCESS,
    Status.SKIPPED,
    Status.WARNING,
    Status.FAILURE,
    Status.ERROR,
    Status.CANCELLED,
]
STATUS_STYLE = {
    Status.SUCCESS: "green",
    Status.WARNING: "yellow",
    Status.FAILURE: "red",
    Status.ERROR: "magenta",
    Status.CANCELLED: "bright_black",
    Status.SKIPPED: "bright_black",
}

err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)


class TerminalSink:
    """Prints a header per step and its output as it comes, colours untouched."""

    def __init__(self, job: JobPlan, total_jobs: int) -> None:
        self.job = job
        self.prefix = f"{job.name} · " if total_jobs > 1 else ""
        self.out = sys.stdout.buffer

    async def step_started(self, result: StepResult, step: StepPlan) -> None:
        image = step.image or self.job.image
        where = f" ({image})" if image else ""
        count = len(self.job.steps)
        title = f"{self.prefix}step {result.index + 1}/{count}: {step.name}{where}"
        self.out.write(f"\n\x1b[1;36m── {title}\x1b[0m\n".encode())
        self.out.flush()

    async def step_output(self, result: StepResult, data: bytes) -> None:
        self.out.write(data)
        self.out.flush()

    async def step_finished(self, result: StepResult) -> None:
        if result.status is Status.SKIPPED:
            return
        style = STATUS_STYLE.get(result.status, "")
        took = "" if result.duration is None else f" in {seconds(result.duration)}"
        out.print(f"[{style}]{result.name}: {result.status}{took}[/]")
        out.file.flush()


@dataclass
class Source:
    """Where the code comes from: the working tree here, or a remote at a ref."""

    directory: Path
    repo: str | None
    ref: str | None
    cache: Path

    def checkout(self, dest: Path) -> CommitInfo:
        if self.repo:
            mirrors = MirrorCache(self.cache / "mirrors")
            return mirrors.checkout(self.repo, self.ref or "HEAD", dest)
        return copy_working_tree(self.directory, dest)

    @property
    def project(self) -> str:
        if self.repo:
            name = self.repo.rstrip("/").rsplit("/", 1)[-1]
            return name.removesuffix(".git") or "project"
        return self.directory.resolve().name or "project"


def run_command(
    *,
    directory: Path,
    backend: str | None,
    repo: str | None,
    ref: str | None,
    secret: list[str] | None,
    variable: list[str] | None,
    event: str,
    pipeline_path: str,
    build_command: str | None,
    image: str | None,
    job: list[str] | None,
    network: str,
    artifacts_dir: Path,
    keep_workspace: bool,
    grace: float | None,
    cache_dir: Path,
) -> None:
    """The body of `conveyor exec` (see `conveyor.cli.execute`)."""
    if ref and not repo:
        fail("--ref needs --repo (a checkout runs its working tree as it is)")
    source = Source(directory, repo, ref, cache_dir)
    try:
        given_secrets = secrets_from(os.environ, secret or [])
        variables = pairs("--var", variable or [])
        backend_name = backend or default_backend_name()
        chosen = create_backend(backend_name)
    except BackendError as exc:
        fail(str(exc))
    except ValueError as exc:
        fail(str(exc))
    code = asyncio.run(
        run_all(
            source,
            chosen,
            options=RunOptions(
                event=event,
                pipeline_path=pipeline_path,
                build_command=build_command,
                image=image,
                jobs=set(job or []),
                network=network,
                artifacts_dir=artifacts_dir.resolve(),
                keep_workspace=keep_workspace,
                grace=grace,
                secrets=given_secrets,
                variables=variables,
            ),
        )
    )
    raise typer.Exit(code)


@dataclass(frozen=True)
class RunOptions:
    event: str
    pipeline_path: str
    build_command: str | None
    image: str | None
    jobs: set[str]
    network: str
    artifacts_dir: Path
    keep_workspace: bool
    grace: float | None
    secrets: dict[str, str]
    variables: dict[str, str]


def fail(message: str, code: int = 2) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def pairs(flag: str, items: list[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ValueError(f"{flag} {item!r}: expected NAME=VALUE")
        found[name] = value
    return found


def secrets_from(environ: dict[str, str] | os._Environ[str], given: list[str]) -> dict[str, str]:
    prefix = "CONVEYOR_SECRET_"
    found = {
        k[len(prefix) :]: v for k, v in environ.items() if k.startswith(prefix) and k != prefix
    }
    found.update(pairs("--secret", given))
    return found


def resolve_network(name: str, backend: Backend) -> NetworkMode:
    if name != "auto":
        try:
            return NetworkMode(name)
        except ValueError:
            fail(f"--network {name!r}: expected one of none, job, bridge, auto")
    return backend.default_network()


async def run_all(source: Source, backend: Backend, options: RunOptions) -> int:
    root = Path(tempfile.mkdtemp(prefix="conveyor-exec-"))
    try:
        first = root / "job-0"
        try:
            commit = await asyncio.to_thread(source.checkout, first / "src")
        except CheckoutError as exc:
            fail(str(exc))
        workspace = first / "src"

        def read_file(relative: str) -> str | None:
            path = workspace / relative
            try:
                return path.read_text() if path.is_file() else None
            except (OSError, UnicodeDecodeError):
                return None

        try:
            pipeline = load_pipeline(
                read_file, pipeline_path=options.pipeline_path, build_command=options.build_command
            )
            context = TriggerContext(
                event=options.event,
                branch=commit.branch,
                tag=commit.tag,
                commit_sha=commit.sha,
                project=source.project,
                actor=getpass.getuser(),
                build_hash=commit.sha,
                default_image=options.image,
            )
            compiled = pipeline.compile(context)
        except PipelineError as exc:
            fail(str(exc))
        jobs = [j for j in compiled.jobs if not options.jobs or j.name in options.jobs]
        if not jobs:
            names = ", ".join(sorted(options.jobs))
            reason = compiled.skipped_reason or f"no job is named {names}"
            err.print(f"nothing to run: {reason}")
            return 0
        network = resolve_network(options.network, backend)
        out.print(
            f"[bold]{source.project}[/] @ {commit.sha[:12]}"
            f" ({commit.branch or commit.tag or 'detached'}) · {pipeline.source}"
            f" · backend {backend.name} · {len(jobs)} job(s)"
        )
        out.file.flush()
        results: list[tuple[JobPlan, JobResult]] = []
        for number, plan in enumerate(jobs):
            job_root = root / f"job-{number}"
            if number:
                await asyncio.to_thread(source.checkout, job_root / "src")
            result = await run_one(
                plan, backend, network, job_root, commit, source, options, len(jobs)
            )
            results.append((plan, result))
            if options.keep_workspace:
                err.print(f"workspace kept: {job_root / 'src'}")
            elif plan.cleanup.remove_workspace:
                shutil.rmtree(job_root, ignore_errors=True)
            if result.status is Status.CANCELLED:
                break
        summarize(results)
        worst = max((r.status for _, r in results), key=SEVERITY.index)
        return EXIT_CODES.get(worst, 2)
    finally:
        if not options.keep_workspace:
            shutil.rmtree(root, ignore_errors=True)


async def run_one(
    plan: JobPlan,
    backend: Backend,
    network: NetworkMode,
    job_root: Path,
    commit: CommitInfo,
    source: Source,
    options: RunOptions,
    total_jobs: int,
) -> JobResult:
    runner = JobRunner(
        backend=backend,
        plan=plan,
        key=f"exec-{random.token_hex(4)}",
        workspace=job_root / "src",
        output=job_root / "output",
        facts=RunFacts(
            commit_sha=commit.sha,
            branch=commit.branch,
            tag=commit.tag,
            commit_message=commit.message,
            commit_author=commit.author,
            repo_url=source.repo or str(source.directory.resolve()),
            project=source.project,
            event=options.event,
            variables=options.variables,
        ),
        sink=TerminalSink(plan, total_jobs),
        secrets=options.secrets,
        artifacts_dir=options.artifacts_dir / _safe(plan.name),
        network=network,
        stop_grace=options.grace,
    )
    loop = asyncio.get_running_loop()

    def on_interrupt() -> None:
        err.print("\n[yellow]cancelling: stopping the running step…[/]")
        runner.cancel("Ctrl-C")

    loop.add_signal_handler(signal.SIGINT, on_interrupt)
    loop.add_signal_handler(signal.SIGTERM, on_interrupt)
    try:
        return await runner.run()
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        loop.remove_signal_handler(signal.SIGTERM)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.=" else "_" for c in name) or "job"


def seconds(value: float) -> str:
    """A duration for people: `0.42s`, `12.3s`, `4m05s`."""
    if value < 10:
        return f"{value:.2f}s"
    if value < 60:
        return f"{value:.1f}s"
    minutes, rest = divmod(round(value), 60)
    return f"{minutes}m{rest:02d}s"


def summarize(results: list[tuple[JobPlan, JobResult]]) -> None:
    table = Table(title=None, show_edge=False, header_style="bold")
    if len(results) > 1:
        table.add_column("job")
    for column in ("step", "status", "exit", "time"):
        table.add_column(column, justify="right" if column in ("exit", "time") else "left")
    for plan, result in results:
        for step in result.steps:
            style = STATUS_STYLE.get(step.status, "")
            row = [
                step.name,
                f"[{style}]{step.status}[/]",
                "" if step.exit_code is None else str(step.exit_code),
                "" if step.duration is None else seconds(step.duration),
            ]
            table.add_row(*([plan.name] if len(results) > 1 else []), *row)
    out.print()
    out.print(table)
    for plan, result in results:
        label = f"{plan.name}: " if len(results) > 1 else ""
        style = STATUS_STYLE.get(result.status, "")
        took = seconds(result.finished_at - result.started_at)
        line = f"{label}[bold {style}]{result.status}[/] in {took}"
        if result.message:
            line += f" · {result.message}"
        out.print(line)
        for note in result.notes:
            out.print(f"  [yellow]note:[/] {note}")
        for artifact in result.artifacts:
            extra = f" {artifact.hash_algorithm}:{artifact.hash}" if artifact.hash else ""
            size = f"{artifact.size} bytes"
            out.print(f"  artifact {artifact.path} ({size}) sha256:{artifact.sha256}{extra}")
