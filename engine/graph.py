"""One wrapper around networkx with the verbs that runbooks need.

No other module calls networkx. Cycle detection and reachability come from networkx.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import networkx as nx

from .spec import (
    END,
    ActionStep,
    AllStep,
    CallStep,
    CheckStep,
    ForeachStep,
    ManualStep,
    Retry,
    Route,
    Runbook,
    Step,
    WaitStep,
    step_kind,
)

__all__ = ["Edge", "RunbookGraph"]


class Edge(NamedTuple):
    """One labelled route between two steps (a tuple: ten thousand are made in no time)."""

    source: str
    target: str
    label: str
    retry: int | None = None


def _target(route: Route) -> tuple[str, int | None]:
    return (route.step, route.max) if isinstance(route, Retry) else (route, None)


_ROUTED = (CheckStep, WaitStep)
_NEXT = (ActionStep, ManualStep, CallStep, AllStep, ForeachStep)


def step_edges(step_id: str, step: Step) -> Iterator[Edge]:
    """The labelled edges that leave one step, in the order the step names them."""
    routes: list[tuple[str, Route]] = []
    if isinstance(step, _ROUTED):
        routes += [(label, route) for label, route in step.on]
    elif isinstance(step, AllStep):
        routes += [("branch", child) for child in step.all]
    elif isinstance(step, ForeachStep):
        routes.append(("each", step.do))
    if isinstance(step, _NEXT):
        routes.append(("next", step.next))
    for label, route in routes:
        target, retry = _target(route)
        yield Edge(step_id, target, label, retry)


def _grouped(edges: list[Edge]) -> list[Edge]:
    """One step's edges, grouped by target in the order the targets first appear."""
    if len(edges) < 2:
        return edges
    first: dict[str, int] = {}
    for e in edges:
        first.setdefault(e.target, len(first))
    return sorted(edges, key=lambda e: first[e.target])


class RunbookGraph:
    """The steps of one runbook and their routes; build one with `RunbookGraph.of(runbook)`.

    The labelled routes are kept as a list (two outcomes may route to the same step); the
    algorithms run on a networkx DiGraph of the steps, which a runbook of ten thousand
    steps builds in a fraction of the time that a MultiDiGraph of its routes takes.
    """

    def __init__(self, runbook_id: str, start: str) -> None:
        self.id = runbook_id
        self.start = start
        self._g: nx.DiGraph = nx.DiGraph()
        self._g.add_node(END)
        self._kinds: dict[str, str] = {END: "end"}  # beside the graph: cheaper than node data
        self._edges: list[Edge] = []

    @classmethod
    def of(cls, runbook: Runbook) -> RunbookGraph:
        graph = cls(runbook.id, runbook.start)
        graph._kinds.update((step_id, step_kind(step) or "?")
                            for step_id, step in runbook.steps.items())
        graph._g.add_nodes_from(runbook.steps)
        for step_id, step in runbook.steps.items():
            graph._edges += _grouped(list(step_edges(step_id, step)))
        # One call for all: networkx's per-call overhead is most of the cost per step.
        graph._g.add_edges_from((e.source, e.target) for e in graph._edges)
        return graph

    def add_step(self, step_id: str, kind: str) -> None:
        self._kinds[step_id] = kind
        self._g.add_node(step_id)

    def add_edge(self, edge: Edge) -> None:
        self._edges.append(edge)
        self._g.add_edge(edge.source, edge.target)

    def kind(self, step_id: str) -> str:
        return self._kinds.get(step_id, "?")

    def steps(self) -> list[str]:
        return [n for n in self._g.nodes if n != END]

    def edges(self) -> list[Edge]:
        return list(self._edges)

    def unknown_targets(self) -> list[Edge]:
        """Edges to steps that the runbook does not define."""
        return [e for e in self._edges if e.target not in self._kinds]

    def roots(self) -> list[str]:
        return [self.start]

    def reachable(self) -> set[str]:
        if self.start not in self._g:
            return set()
        return {self.start, *nx.descendants(self._g, self.start)}

    def unreachable(self) -> list[str]:
        seen = self.reachable()
        return [s for s in self.steps() if s not in seen]

    def illegal_cycle(self) -> list[str] | None:
        """A cycle that passes through neither a `wait` step nor a `retry` edge, if any.

        The strongly connected components are found first (linear); find_cycle then only
        searches one of them, since it is slow on a graph of thousands of steps."""
        if nx.is_directed_acyclic_graph(self._g):
            return None  # no cycle at all (most diagnosis trees): a tenth of the search's cost
        waits = {n for n, kind in self._kinds.items() if kind == "wait"}
        g = nx.DiGraph()
        g.add_edges_from((e.source, e.target) for e in self._edges
                         if e.retry is None and e.source not in waits
                         and e.target not in waits)
        order = {n: i for i, n in enumerate(g)}
        for part in sorted(nx.strongly_connected_components(g),
                           key=lambda p: min(order[n] for n in p)):
            node = min(part, key=order.__getitem__)     # the first step, as written
            if len(part) > 1 or g.has_edge(node, node):
                cycle = nx.find_cycle(g.subgraph(part), source=node)
                return [u for u, _ in cycle] + [cycle[-1][1]]
        return None

    def order(self) -> list[str]:
        """Reachable steps, breadth first from the start, each once."""
        if self.start not in self._g:
            return []
        seen = [self.start]
        for _, v in nx.bfs_edges(self._g, self.start):
            if v != END and v not in seen:
                seen.append(v)
        return seen

    def to_dot(self) -> str:
        lines = [f'digraph "{self.id}" {{', "  rankdir=TB;"]
        shape = {"check": "diamond", "finding": "note", "end": "point",
                 "action": "box", "wait": "hexagon", "manual": "parallelogram"}
        for node in self._g.nodes:
            kind = self.kind(node)
            lines.append(f'  "{node}" [label="{node}\\n({kind})", '
                         f'shape={shape.get(kind, "ellipse")}];')
        for e in self.edges():
            label = e.label + (f" (retry ≤{e.retry})" if e.retry else "")
            lines.append(f'  "{e.source}" -> "{e.target}" [label="{label}"];')
        lines.append("}")
        return "\n".join(lines) + "\n"

    def to_mermaid(self) -> str:
        ids = {n: f"n{i}" for i, n in enumerate(self._g.nodes)}
        lines = ["flowchart TD"]
        for node in self._g.nodes:
            text = f"{node} ({self.kind(node)})".replace('"', "'")
            lines.append(f'  {ids[node]}["{text}"]')
        for e in self.edges():
            label = e.label + (f" retry<={e.retry}" if e.retry else "")
            lines.append(f"  {ids[e.source]} -->|{label}| {ids[e.target]}")
        return "\n".join(lines) + "\n"
