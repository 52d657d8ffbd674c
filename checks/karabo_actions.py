"""Karabo actions: call a slot, set a property, wait for a state.  Only `run` mode reaches
them (`guard_mutation`); the read-only checks are in `checks.karabo`.
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from engine.context import Context
from engine.errors import TransportError
from engine.registry import action, guard_mutation
from engine.result import Result

from ._compare import same
from ._karabo import KaraboRemoteError, KaraboUnreachable, call_timeout, client_for

__all__ = ["CallSlot", "SetProperty", "WaitState", "call_slot", "set_property", "wait_state"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class CallSlot(_Model):
    device: str = Field(min_length=1)
    slot: str = Field(min_length=1)
    args: list[Any] = Field(default_factory=list)


@action("karabo.call")
def call_slot(p: CallSlot, ctx: Context) -> Result:
    """Call a slot (``d.restart()``); a slot refused by the device is a failed action."""
    client = client_for(ctx)
    guard_mutation(f"call {p.slot} on {p.device}")
    try:
        reply = client.call(p.device, p.slot, p.args, call_timeout(ctx))
    except KaraboRemoteError as exc:
        return Result.fail(f"{p.device}.{p.slot}() refused: {exc}", error=str(exc))
    return Result.ok(f"called {p.device}.{p.slot}()", reply=reply)


class SetProperty(_Model):
    device: str = Field(min_length=1)
    property: str = Field(min_length=1)
    value: Any


@action("karabo.set")
def set_property(p: SetProperty, ctx: Context) -> Result:
    """Set a property and read it back."""
    client, timeout = client_for(ctx), call_timeout(ctx)
    guard_mutation(f"set {p.device}.{p.property}")
    try:
        client.set(p.device, {p.property: p.value}, timeout)
    except KaraboRemoteError as exc:
        return Result.fail(f"setting {p.device}.{p.property} refused: {exc}", error=str(exc))
    now = client.get(p.device, [p.property], timeout).get(p.property)
    if not same(now, p.value):
        return Result.fail(f"{p.device}.{p.property} is {now!r} after setting {p.value!r}",
                           value=now)
    return Result.ok(f"{p.device}.{p.property} = {now!r}", value=now)


class WaitState(_Model):
    device: str = Field(min_length=1)
    states: list[str] = Field(min_length=1)
    timeout: float = Field(default=60.0, gt=0, le=3600)
    interval: float = Field(default=1.0, gt=0, le=60)


@action("karabo.wait_state")
def wait_state(p: WaitState, ctx: Context) -> Result:
    """Poll until the device reaches one of ``states``; a device that is away for a while
    (its server restarting) is polled again until the deadline."""
    start = time.monotonic()
    deadline = start + min(p.timeout, ctx.timeout)
    last, seen = "never answered", None
    for _attempt in range(1_000_000):
        try:
            seen = str(client_for(ctx).get(p.device, ["state"], call_timeout(ctx)).get("state"))
            last = f"{p.device} is {seen}"
            if seen in p.states:
                return Result.ok(f"{last} after {time.monotonic() - start:.1f} s", state=seen)
        except KaraboUnreachable:
            raise
        except TransportError as exc:
            last = str(exc)
        left = deadline - time.monotonic()
        if left <= 0:
            break
        time.sleep(min(p.interval, left))
    return Result.fail(f"{last}; expected {' or '.join(p.states)} within "
                       f"{min(p.timeout, ctx.timeout):g} s", state=seen)
