"""RESTART: restarts the calibration servers through each host's karabo-webserver (11.1).

For each host in order: list the servers (``GET <template>/api/servers.json``), and kill
every one not matched by "Omit from restart" (``PUT /api/servers/<name>.json`` with
``{"server": {"command": "kill"}}``: supervise starts it again).  Then wait until each
restarted server is up again.  The device retries a host it cannot talk to, or a server
the webserver refuses to control, until it succeeds: the status text stops where the
facility's does, before "All servers restarted!", and the walk resumes if the cause is
fixed.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from pathlib import Path
from typing import Any

import httpx
from karabo.middlelayer import (
    AccessMode,
    Double,
    Overwrite,
    Slot,
    State,
    String,
    VectorString,
)
from karabo.middlelayer import background as run_in_background

from ._base import TwinDevice

__all__ = ["TwinRestart", "resolve_host", "omitted"]

RETRY_S = 2.0


def resolve_host(name: str) -> str:
    """The twin's DNS (``sim.hosts.resolve``); facility names map to loopback addresses."""
    try:
        from sim.hosts import resolve
    except ImportError:
        hosts = Path(os.environ.get("RUNBOOK_TWIN_HOSTS", ""))
        table = json.loads(hosts.read_text()) if hosts.is_file() else {}
        if name not in table:
            raise LookupError(f"unknown host {name!r}") from None
        return str(table[name])
    return resolve(name)


def omitted(server: str, omit: str) -> bool:
    """"Omit from restart": comma-separated expressions matching (parts of) server names."""
    for expr in (e.strip() for e in omit.split(",")):
        if not expr:
            continue
        try:
            if re.search(expr, server):
                return True
        except re.error:
            if expr in server:
                return True
    return False


class TwinRestart(TwinDevice):
    """The instrument's RESTART device; ``restart()`` then ``waitUntil(state == ACTIVE)``."""

    state = Overwrite(defaultValue=State.ON,
                      options=[State.ON, State.CHANGING, State.ACTIVE, State.ERROR])
    hosts = VectorString(displayedName="Hosts", defaultValue=[])
    omitFromRestart = String(displayedName="Omit from restart", defaultValue="webserver")
    webserverTemplate = String(displayedName="Webserver template",
                               defaultValue="http://{host}:8080")
    requestTimeout = Double(defaultValue=5.0, minInc=0.1)
    upAfter = Double(displayedName="Wait until servers are up", defaultValue=120.0,
                     accessMode=AccessMode.RECONFIGURABLE)
    _walk: Any = None

    @Slot(displayedName="Restart servers",
          allowedStates=[State.ON, State.ACTIVE, State.ERROR])
    async def restart(self) -> None:
        self.state = State.CHANGING
        self.status = "Restarting servers"
        self._walk = run_in_background(self._restart_all())

    def _base_url(self, host: str) -> str:
        return str(self.webserverTemplate).format(host=resolve_host(host)).rstrip("/")

    async def _until(self, what: str, attempt: Any) -> Any:
        """Retry ``attempt`` until it succeeds; the status text is left as it was."""
        while True:
            try:
                return await attempt()
            except (httpx.HTTPError, LookupError, KeyError, IndexError, ValueError,
                    RuntimeError) as exc:
                self.say("WARN", f"{what}: {exc!r}; retrying")
            await asyncio.sleep(RETRY_S)

    async def _restart_all(self) -> None:
        timeout = float(self.requestTimeout)
        restarted: dict[str, list[tuple[str, str]]] = {}
        # The webserver leaves calls from inside the twin out of its mutation log.
        async with httpx.AsyncClient(timeout=timeout, trust_env=False,
                                     headers={"X-Karabo-Caller": str(self.deviceId)}) as client:
            for host in self.hosts.value:
                self.status = f"Restarting servers on {host}"
                servers = await self._until(f"listing servers on {host}",
                                            lambda h=host: self._list(client, h))
                todo = [s for s in servers if not omitted(s["name"], str(self.omitFromRestart))]
                done = []
                for server in todo:
                    self.status = f"Restarting {server['name']} on {host}"
                    if await self._until(f"restarting {server['name']} on {host}",
                                         lambda h=host, s=server: self._kill(client, h,
                                                                             s["name"])):
                        done.append(server)
                restarted[host] = [(s["name"], s["since"]) for s in done]
            self.status = "Waiting for servers to come back"
            for host, servers in restarted.items():
                for name, since in servers:
                    await self._until(f"waiting for {name} on {host}",
                                      lambda h=host, n=name, t=since:
                                      self._wait_up(client, h, n, t))
        self.state = State.ACTIVE
        self.status = "All servers restarted!"
        self.say("INFO", "All servers restarted!")

    async def _list(self, client: httpx.AsyncClient, host: str) -> list[dict[str, Any]]:
        reply = await client.get(f"{self._base_url(host)}/api/servers.json")
        reply.raise_for_status()
        return list(reply.json()["servers"])

    async def _kill(self, client: httpx.AsyncClient, host: str, name: str) -> bool:
        """True once killed; False if it was added to "Omit from restart" meanwhile."""
        if omitted(name, str(self.omitFromRestart)):
            return False
        body = {"server": {"command": "kill"}}
        reply = await client.put(f"{self._base_url(host)}/api/servers/{name}.json",
                                 json=body)
        reply.raise_for_status()
        if not reply.json().get("success"):
            raise RuntimeError(f"webserver on {host} refused to restart {name}")
        return True

    async def _wait_up(self, client: httpx.AsyncClient, host: str, name: str,
                       since: str) -> None:
        reply = await client.get(f"{self._base_url(host)}/api/servers/{name}.json")
        reply.raise_for_status()
        data = reply.json()
        server = data["servers"][0]
        if server["since"] == since or not data.get("status_ok"):
            raise RuntimeError(f"{name} on {host} is not up again yet")
