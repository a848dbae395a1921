"""Progress bar and summary table of a batch (rich, on stderr so stdout stays data)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from msconvert.convert.pipeline import BatchReport, ClipOutcome

stderr = Console(stderr=True)
LONG_COMPILE_S = 2.0  # a compile at least this long is printed above the training bar


class BatchProgress:
    """A rich progress bar counting clips done and failed, with an ETA; with `nodes`, also how
    many clips each machine (Ray node) has finished."""

    def __init__(
        self, total: int, description: str, console: Console = stderr, nodes: bool = False
    ) -> None:
        self.failed = 0
        self.per_node: Counter[str] = Counter()
        columns = [
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("[red]{task.fields[failed]} failed"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
        ]
        if nodes:
            columns.append(TextColumn("{task.fields[nodes]}"))
        self.progress = Progress(*columns, console=console, transient=False)
        self.task = self.progress.add_task(description, total=total, failed=0, nodes="")

    def __enter__(self) -> BatchProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def skipped(self, n: int) -> None:
        self.progress.update(self.task, advance=n)

    def outcome(self, outcome: ClipOutcome) -> None:
        if outcome.status != "complete":
            self.failed += 1
        self.progress.update(self.task, advance=1, failed=self.failed)

    def node(self, label: str) -> None:
        """One more clip finished on this machine ('?': its worker or node died)."""
        self.per_node[label] += 1
        self.progress.update(self.task, nodes=node_counts(self.per_node))


def node_counts(per_node: Counter[str], shown: int = 4) -> str:
    """'nodes: host-a 12 · host-b 9 · +3 nodes': the busiest machines first."""
    top = per_node.most_common()
    text = "nodes: " + " · ".join(f"{label} {n}" for label, n in top[:shown])
    if len(top) > shown:
        text += f" · +{len(top) - shown} nodes"
    return text


def summary_table(report: BatchReport, max_failures: int = 20) -> Table:
    """The end-of-run summary: counts, throughput and the first failures with their reasons."""
    table = Table(title="msconvert summary", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("clips", str(report.total))
    table.add_row("complete", str(report.completed))
    table.add_row("failed", f"[red]{report.failed}" if report.failed else "0")
    if report.skipped:
        table.add_row("already complete (resumed)", str(report.skipped))
    table.add_row("frames converted", f"{report.frames:,}")
    table.add_row("wall time", f"{report.seconds:.1f} s")
    done = report.completed + report.failed
    if report.seconds > 0 and done:
        table.add_row("throughput", f"{done / report.seconds:.1f} clips/s")
    for clip, reason in report.failures[:max_failures]:
        table.add_row(f"[red]failed[/] {clip}", reason)
    if len(report.failures) > max_failures:
        table.add_row("…", f"{len(report.failures) - max_failures} more failures (msconvert ls)")
    return table


class TrainProgress:
    """A rich progress bar over environment steps: steps/s, tracking error, ETA. The ETA is the
    sooner of the step budget at the current rate and the wall-time budget, when there is one."""

    def __init__(
        self,
        total_steps: int,
        description: str,
        console: Console = stderr,
        budget_minutes: float | None = None,
    ) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("env steps {task.fields[rate]:>7.0f}/s"),
            TextColumn("joint error {task.fields[error]:5.1f}°"),
            TimeElapsedColumn(),
            TextColumn("ETA {task.fields[eta]}"),
            TextColumn("[dim]{task.fields[compile]}"),
            console=console,
            transient=False,
        )
        self.console = console
        self.total_steps = total_steps
        self.budget_s = None if budget_minutes is None else 60.0 * budget_minutes
        self.task = self.progress.add_task(
            description, total=total_steps, rate=0.0, error=0.0, eta="-:--:--", compile=""
        )
        self._start: tuple[float, float] | None = None

    def __enter__(self) -> TrainProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def compile_started(self, name: str) -> None:
        """XLA has started compiling `name` (JAX runs nothing else until it is done)."""
        self.progress.update(self.task, compile=f"compiling {name}…")

    def compile_ended(self, done: Any) -> None:
        """A compile is done (`compiling.Compile`): on the bar, and above it when it was long
        enough to notice (or came from the persistent cache)."""
        how = "from the cache" if done.cache_hit else "compiled"
        text = f"{done.name} {how} in {done.seconds:.1f} s"
        self.progress.update(self.task, compile=text)
        if done.seconds >= LONG_COMPILE_S:
            self.console.print(f"[dim]{text}[/]")

    def update(self, row: dict[str, float]) -> None:
        steps, seconds = row["env_steps"], row["seconds"]
        if self._start is None:  # the first chunk includes compilation: rate from the second on
            self._start = (steps, seconds)
            rate = 0.0
        else:
            rate = (steps - self._start[0]) / max(seconds - self._start[1], 1e-9)
        left = [(self.total_steps - steps) / rate] if rate > 0 else []
        if self.budget_s is not None:
            left.append(self.budget_s - seconds)
        eta = "-:--:--" if not left else _clock(max(min(left), 0.0))
        self.progress.update(
            self.task,
            completed=steps,
            rate=rate,
            error=row.get("joint_error_deg", float("nan")),
            eta=eta,
        )


def _clock(seconds: float) -> str:
    whole = int(round(seconds))
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"
