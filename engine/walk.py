"""One walker, three modes.

- diagnose: checks only; `all` and `foreach` branches run concurrently under one bound;
- plan: every reachable step is resolved on every route, nothing is changed (actions are
  never called, and the registry's guard refuses them if something tries); `probe` also
  runs the read-only checks;
- run: executes, asking before danger and manual steps.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import threading
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterable
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import ValidationError as PydanticError

from .context import Context, Resources
from .errors import RunbookError, ValidationError
from .redact import redact
from .registry import Entry, Registry, mutations_allowed
from .result import Finding, Report, Result, StepRecord, Unknown
from .spec import (
    END,
    ActionStep,
    AllStep,
    CallStep,
    CheckStep,
    FindingStep,
    ForeachStep,
    ManualStep,
    Postcondition,
    Retry,
    Route,
    Step,
    WaitStep,
    step_kind,
)
from .templating import render, render_value

if TYPE_CHECKING:
    from .inventory import Inventory
    from .journal import Journal
    from .loader import Catalog, LoadedRunbook

__all__ = ["Mode", "Walker", "resolve_params", "MAX_STEPS"]

Mode = Literal["diagnose", "plan", "run"]
MAX_STEPS = 20_000
_SUBJECT_KEYS = ("host", "device", "path", "url", "server")


class _Abort(Exception):
    pass


_JOURNALED = (CheckStep, WaitStep, ActionStep, ManualStep)


class _DaemonThreads(Executor):
    """A daemon thread per call (the walk's semaphore bounds how many): a check stuck past
    its timeout is left behind as `unknown` and must not keep the process from exiting,
    which a ThreadPoolExecutor's workers would (they are joined at exit)."""

    def __init__(self, name: str) -> None:
        self._name = name

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()

        def run() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting step
                future.set_exception(exc)

        threading.Thread(target=run, name=self._name, daemon=True).start()
        return future


@dataclass
class _Scope:
    lr: LoadedRunbook
    ctx: dict[str, Any]
    branch: str
    trail: list[StepRecord] = field(default_factory=list)
    retries: Counter[tuple[str, str]] = field(default_factory=Counter)
    seen: set[str] | None = None  # plan mode: steps already resolved in this scope

    def child(self, branch: str, **ctx: Any) -> _Scope:
        return _Scope(self.lr, {**self.ctx, **ctx}, branch, list(self.trail), Counter(),
                      None if self.seen is None else set())


def resolve_params(lr: LoadedRunbook, given: dict[str, Any]) -> dict[str, Any]:
    """Check `given` against the runbook's declared params, coercing CLI strings."""
    out: dict[str, Any] = {}
    problems = []
    for name in given:
        if name not in lr.runbook.params:
            problems.append(f"runbook '{lr.runbook.id}' has no parameter '{name}'")
    for name, param in lr.runbook.params.items():
        if name not in given:
            if param.default is not None or not param.required:
                out[name] = param.default
            else:
                problems.append(f"runbook '{lr.runbook.id}' needs parameter '{name}' "
                                f"({param.type})")
            continue
        value = given[name]
        try:
            out[name] = _coerce(value, param.type)
        except ValueError:
            problems.append(f"parameter '{name}' of '{lr.runbook.id}' is {param.type}, "
                            f"got {value!r}")
            continue
        problems += _bounds_problems(lr.runbook.id, name, param, out[name])
    if problems:
        raise ValidationError(problems)
    return out


def _bounds_problems(runbook: str, name: str, param: Any, value: Any) -> list[str]:
    what = f"parameter '{name}' of '{runbook}'"
    if param.choices is not None and value not in param.choices:
        return [f"{what} must be one of {param.choices}, got {value!r}"]
    if isinstance(value, int | float) and not isinstance(value, bool):
        if param.minimum is not None and value < param.minimum:
            return [f"{what} must be at least {param.minimum:g}, got {value!r}"]
        if param.maximum is not None and value > param.maximum:
            return [f"{what} must be at most {param.maximum:g}, got {value!r}"]
    return []


def _coerce(value: Any, kind: str) -> Any:
    if not isinstance(value, str) or kind in ("str", "instrument", "host"):
        return value
    if kind == "int":
        return int(value)
    if kind == "float":
        return float(value)
    if kind == "bool":
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(value)
    if kind == "list":
        return [v for v in value.split(",") if v]
    return value


async def _together(coros: Iterable[Coroutine[Any, Any, None]]) -> None:
    """Run branches concurrently; the first error stops the others and is raised as is."""
    try:
        async with asyncio.TaskGroup() as group:
            for coro in coros:
                group.create_task(coro)
    except BaseExceptionGroup as group_error:
        raise group_error.exceptions[0] from None


class Walker:
    """Walks runbooks of a catalog against an inventory; one Walker per walk."""

    def __init__(self, catalog: Catalog, registry: Registry, inventory: Inventory, *,
                 mode: Mode, instrument: str | None = None, probe: bool = False,
                 yes: bool = False, concurrency: int = 32,
                 confirm: Callable[[str], bool] | None = None,
                 say: Callable[[str], None] | None = None,
                 journal: Journal | None = None,
                 resources: Resources | None = None) -> None:
        self.catalog, self.registry, self.inventory = catalog, registry, inventory
        self.journal = journal
        self._met: Counter[tuple[str, str]] = Counter()  # journal keys: (branch, step)
        self.stop_requested = False  # Ctrl-C: stop after the step under way
        self.mode, self.instrument, self.probe, self.yes = mode, instrument, probe, yes
        self.confirm = confirm or (lambda _q: False)
        self.say = say or (lambda _t: None)
        self._sem = asyncio.Semaphore(concurrency)
        self._pool = _DaemonThreads("check")
        # Connections live as long as the walk, unless the caller lends its own (kept open).
        self._resources = resources or Resources()
        self._own_resources = resources is None
        self._steps = 0
        self.report: Report | None = None

    def walk(self, runbook_id: str, params: dict[str, Any]) -> Report:
        """Walk one runbook to the end and return what it found (blocking)."""
        return asyncio.run(self.walk_async(runbook_id, params))

    async def walk_async(self, runbook_id: str, params: dict[str, Any]) -> Report:
        lr = self.catalog.get(runbook_id)
        if self.mode == "diagnose" and lr.runbook.kind == "procedure":
            raise RunbookError(f"'{runbook_id}' is a procedure: use `runbook plan` or "
                               "`runbook run`")
        if lr.runbook.status == "draft":
            raise RunbookError(f"'{runbook_id}' is a draft: its checks are not implemented "
                               "yet, so it cannot be diagnosed, planned or run")
        resolved = resolve_params(lr, params)
        base = self.inventory.context(self.instrument)
        self.report = Report(runbook=runbook_id, mode=self.mode, instrument=self.instrument,
                             site=base["site"]["name"], params=resolved, started=time.time())
        scope = _Scope(lr, {**base, "params": resolved}, runbook_id,
                       seen=set() if self.mode == "plan" else None)
        token = mutations_allowed().set(self.mode == "run")
        hinting = None
        try:
            if self.mode != "plan" or self.probe:
                # Connections open while the first checks run (see `_prefetch`).
                hinting = asyncio.get_running_loop().run_in_executor(
                    self._pool, self._prefetch, scope)
            await self._chain(scope, lr.runbook.start)
        except _Abort as exc:
            self.report.aborted = str(exc)
        finally:
            if hinting is not None:
                await asyncio.wait([hinting])
            mutations_allowed().reset(token)
            if self._own_resources:
                await asyncio.get_running_loop().run_in_executor(self._pool,
                                                                 self._resources.close)
        self.report.finished = time.time()
        # Masked here, once: everything downstream (renderers, store, mail) sees no secret.
        self.report = Report.model_validate(
            redact(self.report.model_dump(), self.inventory.secrets()))
        return self.report

    def _prefetch(self, scope: _Scope) -> None:
        """Hand the targets that the runbook's check steps name to the checks whose parameter
        model has a `prefetch(models, ctx)` classmethod (the SSH checks start opening their
        connections), each `foreach` over every item.  A hint only, run beside the walk: a
        step whose parameters cannot be resolved at the start is left out, and any problem
        is reported by the step itself when the walk gets there."""
        steps = scope.lr.runbook.steps
        hints: dict[str, tuple[Callable[..., None], list[Any]]] = {}

        def hint(at: _Scope, step_id: str) -> None:
            step = steps.get(step_id)
            if isinstance(step, CheckStep):
                model = self.registry.get(step.check).model
                hook = getattr(model, "prefetch", None)
                if callable(hook):
                    with contextlib.suppress(RunbookError, PydanticError, ValueError):
                        hints.setdefault(step.check, (hook, []))[1].append(
                            model.model_validate(self._resolve(at, step_id, step.with_)))

        for step_id, step in steps.items():
            if not isinstance(step, ForeachStep):
                hint(scope, step_id)
                continue
            do = steps.get(step.do)
            with contextlib.suppress(RunbookError, ValueError):
                for item in self._items(scope, step_id, step):
                    at = scope.child(scope.branch, **{step.as_: item["value"], "vars": {
                        **scope.ctx.get("vars", {}), **item.get("vars", {})}})
                    for child in (do.all if isinstance(do, AllStep) else [step.do]):
                        hint(at, child)
        for hook, models in hints.values():
            with contextlib.suppress(RunbookError):
                hook(models, self._context(scope, 30.0))

    # -- routing ---------------------------------------------------------------------

    async def _chain(self, scope: _Scope, step_id: str) -> None:
        next_ids: list[str] = [step_id]
        while next_ids:
            current = next_ids.pop(0)
            if current == END:
                continue
            if scope.seen is not None:
                if current in scope.seen:
                    continue
                scope.seen.add(current)
            self._steps += 1
            if self._steps > MAX_STEPS:
                raise _Abort(f"stopped after {MAX_STEPS} steps: a loop does not end")
            routes = await self._step(scope, current)
            next_ids += [self._follow(scope, current, r) for r in routes]

    def _follow(self, scope: _Scope, source: str, route: Route) -> str:
        if not isinstance(route, Retry):
            return route
        if scope.seen is not None:
            return route.step
        key = (source, route.step)
        scope.retries[key] += 1
        if scope.retries[key] > route.max:
            self._record(scope, StepRecord(
                id=source, kind="retry", source=scope.lr.runbook.source, outcome="exhausted",
                reason=f"retried '{route.step}' {route.max} times", branch=scope.branch))
            return END
        return route.step

    async def _step(self, scope: _Scope, step_id: str) -> list[Route]:
        step = scope.lr.runbook.steps[step_id]
        if self.stop_requested:
            raise _Abort(f"interrupted before step '{step_id}'")
        if self.journal is not None and isinstance(step, _JOURNALED):
            return await self._journaled(scope, step_id, step)
        return await self._do(scope, step_id, step)

    async def _do(self, scope: _Scope, step_id: str, step: Step) -> list[Route]:
        if isinstance(step, CheckStep):
            return await self._check(scope, step_id, step)
        if isinstance(step, WaitStep):
            return await self._wait(scope, step_id, step)
        if isinstance(step, ActionStep):
            return await self._action(scope, step_id, step)
        if isinstance(step, ManualStep):
            return self._manual(scope, step_id, step)
        if isinstance(step, FindingStep):
            self._finding(scope, step_id, step)
            return []
        if isinstance(step, CallStep):
            await self._call(scope, step_id, step)
            return [step.next]
        if isinstance(step, AllStep):
            await self._all(scope, step_id, step)
            return [step.next]
        if isinstance(step, ForeachStep):
            await self._foreach(scope, step_id, step)
            return [step.next]
        raise AssertionError(f"unhandled step kind {step_kind(step)}")

    # -- the journal (run mode) -------------------------------------------------------

    async def _journaled(self, scope: _Scope, step_id: str, step: Any) -> list[Route]:
        """Record the step before and after; replay it if an earlier attempt of this run
        finished it; ask an action's postcondition if that attempt began it only."""
        assert self.journal is not None and self.report is not None
        met = (scope.branch, step_id)
        key = self.journal.key(scope.branch, step_id, self._met[met])
        self._met[met] += 1
        prior = self.journal.entry(key)
        if prior is not None and prior.ended is not None and prior.record is not None:
            return self._replay(scope, step, prior.record)
        if prior is not None and isinstance(step, ActionStep):
            held = await self._postcondition(scope, step_id, step, prior.started)
            if held is not None:
                self._record(scope, held)
                self.journal.end(key, held)
                return [step.next]
        self.journal.begin(key, step_id, str(step_kind(step)))
        mark = len(self.report.steps)
        try:
            return await self._do(scope, step_id, step)
        finally:
            mine = [r for r in self.report.steps[mark:]
                    if r.id == step_id and r.branch == scope.branch]
            if mine:
                self.journal.end(key, mine[-1])

    def _replay(self, scope: _Scope, step: Any, done: StepRecord) -> list[Route]:
        record = self._record(scope, done.model_copy(update={"replayed": True}))
        if isinstance(step, CheckStep):
            if record.outcome == "unknown":
                assert self.report is not None
                self.report.unknowns.append(Unknown(
                    id=record.id, subject=record.subject, reason=record.reason,
                    source=step.source, runbook=scope.lr.runbook.id))
            return [getattr(step.on, record.outcome)]
        if isinstance(step, WaitStep):
            return [step.on.ok if record.outcome == "ok" else step.on.timeout]
        if record.outcome in ("done", "confirmed"):
            return [step.next]
        raise _Abort(f"step '{record.id}' ended {record.outcome} in this run before")

    async def _postcondition(self, scope: _Scope, step_id: str, step: ActionStep,
                             started: float) -> StepRecord | None:
        """The action's record if its postcondition shows that it happened; None if it
        did not happen (do it now); stop if nobody can tell."""
        what = f"action '{step_id}' began in an earlier attempt but was not seen to end"
        post = step.postcondition
        if post is None:
            if self.confirm(f"{what}, and it declares no postcondition. Do it again?"):
                return None
            raise _Abort(f"{what}; not repeated without a postcondition or a yes")
        asked = self._postcondition_asked(scope, step_id, post, started)
        params = asked["with"]
        result = await self._execute(self.registry.get(post.check), params, post.timeout,
                                     self._context(scope, post.timeout))
        if result.outcome == "fail":
            self.say(f"{what}; its postcondition does not hold ({result.evidence}): "
                     "doing it now")
            return None
        if result.outcome == "unknown":
            raise _Abort(f"{what}, and its postcondition cannot be checked: {result.reason}")
        self.say(f"{what}; its postcondition holds ({result.evidence}): not repeated")
        base = self._action_base(scope, step_id, step)
        base["resolved"]["postcondition"] = asked
        return StepRecord(**base, outcome="done", observed=result.observed,
                          evidence=f"postcondition held: {result.evidence}")

    # -- helpers ---------------------------------------------------------------------

    def _postcondition_asked(self, scope: _Scope, step_id: str, post: Postcondition,
                             started_at: float | str) -> dict[str, Any]:
        """The postcondition's check and its `with:`, rendered for an action that began
        at `started_at` (in a plan, a placeholder: it has not begun)."""
        at = scope.child(scope.branch, started_at=started_at)
        return {"check": post.check, "with": self._resolve(at, step_id, post.with_)}

    def _where(self, scope: _Scope, step_id: str) -> str:
        pos = scope.lr.pos("steps", step_id)
        return f"{pos}: runbook '{scope.lr.runbook.id}', step '{step_id}'"

    def _resolve(self, scope: _Scope, step_id: str, value: Any) -> Any:
        return render_value(value, scope.ctx, self._where(scope, step_id))

    def _subject(self, scope: _Scope, step_id: str, step: Step,
                 params: dict[str, Any]) -> str | None:
        template = getattr(step, "subject", None)
        if template:
            return str(self._resolve(scope, step_id, template))
        for key in _SUBJECT_KEYS:
            if isinstance(params.get(key), str):
                return str(params[key])
        return None

    def _record(self, scope: _Scope, record: StepRecord) -> StepRecord:
        assert self.report is not None
        if record.at is None:
            record.at = time.time() - record.duration  # when the step started
        scope.trail.append(record)
        self.report.steps.append(record)
        return record

    def _context(self, scope: _Scope, timeout: float) -> Context:
        site = scope.ctx["site"]
        return Context(mode=self.mode, site=site["name"], transport=site.get("transport", {}),
                       instrument=self.instrument, timeout=timeout,
                       resources=self._resources, vars=dict(scope.ctx.get("vars", {})),
                       instrument_info=scope.ctx.get("instrument") or {})

    async def _execute(self, entry: Entry, params: dict[str, Any], timeout: float,
                       context: Context) -> Result:
        try:
            model = entry.model.model_validate(params)
        except PydanticError as exc:
            return Result.unknown(f"bad parameters for '{entry.name}': "
                                  + "; ".join(e["msg"] for e in exc.errors()))
        try:
            async with self._sem:
                if entry.is_async:
                    coro = entry.fn(model, context)
                else:
                    ctx = contextvars.copy_context()
                    loop = asyncio.get_running_loop()
                    coro = loop.run_in_executor(
                        self._pool, functools.partial(ctx.run, entry.fn, model, context))
                result = await asyncio.wait_for(coro, timeout)
        except TimeoutError:
            return Result.unknown(f"timed out after {timeout:g} s")
        except RunbookError as exc:
            return Result.unknown(str(exc))
        except Exception as exc:  # noqa: BLE001 - a broken check must not stop the walk
            return Result.unknown(f"{entry.name} crashed: {type(exc).__name__}: {exc}")
        if not isinstance(result, Result):
            return Result.unknown(f"{entry.name} returned {type(result).__name__}, not Result")
        return result

    # -- step kinds ------------------------------------------------------------------

    async def _check(self, scope: _Scope, step_id: str, step: CheckStep) -> list[Route]:
        params = self._resolve(scope, step_id, step.with_)
        subject = self._subject(scope, step_id, step, params)
        base: dict[str, Any] = dict(id=step_id, kind="check", source=step.source, subject=subject,
                    resolved={"check": step.check, "with": params, "timeout": step.timeout},
                    branch=scope.branch)
        if self.mode == "plan" and not self.probe:
            self._record(scope, StepRecord(**base, outcome="planned"))
            return [step.on.ok, step.on.fail, step.on.unknown]
        start = time.monotonic()
        result = await self._execute(self.registry.get(step.check), params, step.timeout,
                                     self._context(scope, step.timeout))
        record = self._record(scope, StepRecord(
            **{**base, "subject": subject or result.subject}, outcome=result.outcome,
            observed=result.observed, evidence=result.evidence, reason=result.reason,
            duration=time.monotonic() - start))
        if result.outcome == "unknown":
            assert self.report is not None
            self.report.unknowns.append(Unknown(id=step_id, subject=record.subject,
                                                reason=result.reason, source=step.source,
                                                runbook=scope.lr.runbook.id))
        if self.mode == "plan":
            return [step.on.ok, step.on.fail, step.on.unknown]
        return [getattr(step.on, result.outcome)]

    async def _wait(self, scope: _Scope, step_id: str, step: WaitStep) -> list[Route]:
        params = self._resolve(scope, step_id, step.with_)
        subject = self._subject(scope, step_id, step, params)
        base: dict[str, Any] = dict(id=step_id, kind="wait", source=step.source, subject=subject,
                    resolved={"wait": step.wait, "with": params, "timeout": step.timeout,
                              "interval": step.interval}, branch=scope.branch)
        if self.mode == "plan":
            self._record(scope, StepRecord(**base, outcome="planned"))
            return [step.on.ok, step.on.timeout]
        entry = self.registry.get(step.wait)
        start = time.monotonic()
        deadline = start + step.timeout
        never = result = shown = Result.unknown("never polled")
        for _attempt in range(100_000):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            if self.stop_requested:  # not recorded: a resume waits again, from the start
                raise _Abort(f"interrupted while waiting in step '{step_id}'")
            result = await self._execute(entry, params, min(left, 30.0),
                                         self._context(scope, min(left, 30.0)))
            # A last poll cut short by the deadline says less than the one before it.
            if not (result.outcome == "unknown" and left < 30.0 and shown is not never
                    and result.reason.startswith("timed out after")):
                shown = result
            if result.outcome == "ok":
                break
            await asyncio.sleep(min(step.interval, max(0.0, deadline - time.monotonic())))
        outcome = "ok" if result.outcome == "ok" else "timeout"
        result = result if outcome == "ok" else shown
        self._record(scope, StepRecord(**base, outcome=outcome, observed=result.observed,
                                       evidence=result.evidence, reason=result.reason,
                                       duration=time.monotonic() - start))
        return [step.on.ok if outcome == "ok" else step.on.timeout]

    def _action_base(self, scope: _Scope, step_id: str, step: ActionStep) -> dict[str, Any]:
        """An action's record, less its outcome: what it is, resolved."""
        params = self._resolve(scope, step_id, step.with_)
        return dict(id=step_id, kind="action", source=step.source,
                    subject=self._subject(scope, step_id, step, params), branch=scope.branch,
                    resolved={"action": step.action, "with": params, "danger": step.danger,
                              "timeout": step.timeout})

    async def _action(self, scope: _Scope, step_id: str, step: ActionStep) -> list[Route]:
        base = self._action_base(scope, step_id, step)
        params, subject = base["resolved"]["with"], base["subject"]
        if self.mode != "run":
            if step.postcondition is not None:   # what a resume would ask
                base["resolved"]["postcondition"] = self._postcondition_asked(
                    scope, step_id, step.postcondition, "<when the action begins>")
            self._record(scope, StepRecord(**base, outcome="planned"))
            return [step.next]
        if step.danger and not self.yes:
            what = step.title or f"{step.action} on {subject or 'the facility'}"
            if not self.confirm(f"DANGER ({step.source}): {what}. Go ahead?"):
                self._record(scope, StepRecord(**base, outcome="declined"))
                raise _Abort(f"declined danger step '{step_id}'")
        start = time.monotonic()
        result = await self._execute(self.registry.get(step.action), params, step.timeout,
                                     self._context(scope, step.timeout))
        outcome = "done" if result.outcome == "ok" else "failed"
        self._record(scope, StepRecord(**base, outcome=outcome, observed=result.observed,
                                       evidence=result.evidence, reason=result.reason,
                                       duration=time.monotonic() - start))
        if outcome == "failed":
            raise _Abort(f"action '{step_id}' failed: {result.reason or result.evidence}")
        return [step.next]

    def _manual(self, scope: _Scope, step_id: str, step: ManualStep) -> list[Route]:
        text = str(self._resolve(scope, step_id, step.manual))
        question = self._resolve(scope, step_id, step.confirm) if step.confirm else None
        base: dict[str, Any] = dict(id=step_id, kind="manual", source=step.source,
                                    branch=scope.branch,
                                    resolved={"manual": text, "confirm": question})
        if self.mode != "run":
            self._record(scope, StepRecord(**base, outcome="planned" if self.mode == "plan"
                                           else "skipped"))
            return [step.next]
        self.say(text)
        if not self.confirm(str(question or "Done?")):
            self._record(scope, StepRecord(**base, outcome="declined"))
            raise _Abort(f"stopped at manual step '{step_id}'")
        self._record(scope, StepRecord(**base, outcome="confirmed"))
        return [step.next]

    def _finding(self, scope: _Scope, step_id: str, step: FindingStep) -> None:
        title = str(self._resolve(scope, step_id, step.finding))
        remedy = str(self._resolve(scope, step_id, step.remedy))
        contact = self._resolve(scope, step_id, step.contact) if step.contact else None
        fix = None
        if step.fix is not None:
            fix = {"runbook": step.fix.runbook,
                   "with": self._resolve(scope, step_id, step.fix.with_)}
        checks = [r for r in scope.trail if r.kind in ("check", "wait")]
        wanted = [next((r for r in reversed(checks) if r.id == ref), None)
                  for ref in step.evidence] if step.evidence else checks[-1:]
        evidence = [{"step": r.id, "subject": r.subject, "outcome": r.outcome,
                     "evidence": r.evidence, "observed": r.observed, "at": r.at,
                     "check": r.resolved.get(r.kind), "with": r.resolved.get("with", {})}
                    for r in wanted if r is not None]
        subject = checks[-1].subject if checks else None
        record = StepRecord(id=step_id, kind="finding", source=step.source, outcome="finding",
                            subject=subject, evidence=title, branch=scope.branch,
                            resolved={"finding": title, "remedy": remedy, "fix": fix})
        if self.mode == "plan":
            record.outcome = "planned"
            self._record(scope, record)
            return
        self._record(scope, record)
        assert self.report is not None
        self.report.findings.append(Finding(
            id=step_id, title=title, source=step.source, subject=subject, evidence=evidence,
            remedy=remedy, contact=contact, fix=fix, severity=step.severity,
            runbook=scope.lr.runbook.id))

    async def _call(self, scope: _Scope, step_id: str, step: CallStep) -> None:
        target = self.catalog.get(step.call)
        given = self._resolve(scope, step_id, step.with_)
        params = resolve_params(target, given)
        self._record(scope, StepRecord(id=step_id, kind="call", source=step.source,
                                       outcome="called", branch=scope.branch,
                                       resolved={"call": step.call, "with": params}))
        sub = _Scope(target, {**scope.ctx, "params": params}, f"{scope.branch}/{step.call}",
                     list(scope.trail), Counter(), None if scope.seen is None else set())
        await self._chain(sub, target.runbook.start)

    async def _all(self, scope: _Scope, step_id: str, step: AllStep) -> None:
        await _together(self._chain(scope.child(f"{scope.branch}/{child}"), child)
                        for child in step.all)

    async def _foreach(self, scope: _Scope, step_id: str, step: ForeachStep) -> None:
        items = self._items(scope, step_id, step)
        self._record(scope, StepRecord(id=step_id, kind="foreach", source=step.source,
                                       outcome="expanded", branch=scope.branch,
                                       resolved={"over": step.foreach,
                                                 "items": [i["name"] for i in items]}))
        limit = asyncio.Semaphore(step.concurrency)

        async def one(item: dict[str, Any]) -> None:
            async with limit:
                vars_ = {**scope.ctx.get("vars", {}), **item.get("vars", {})}
                child = scope.child(f"{scope.branch}[{item['name']}]",
                                    **{step.as_: item["value"], "vars": vars_})
                await self._chain(child, step.do)

        await _together(one(item) for item in items)

    def _items(self, scope: _Scope, step_id: str, step: ForeachStep) -> list[dict[str, Any]]:
        """Hosts of an inventory group, or the items of a templated list."""
        if "{{" in step.foreach:
            value = self._resolve(scope, step_id, step.foreach)
            if not isinstance(value, list):
                raise RunbookError(f"{self._where(scope, step_id)}: foreach needs a list, "
                                   f"got {type(value).__name__}")
            return [{"name": str(v.get("name", v)) if isinstance(v, dict) else str(v),
                     "value": v} for v in value]
        hosts = self.inventory.group_hosts(self.instrument, render(step.foreach, scope.ctx))
        return [{"name": h.name, "vars": dict(h.vars),
                 "value": {**h.vars, "name": h.name}} for h in hosts]
