"""The graph wrapper: cycles only through a wait or a retry edge; DOT and Mermaid."""

from __future__ import annotations

from engine.graph import RunbookGraph
from engine.spec import Runbook


def runbook(steps: dict, start: str = "a") -> Runbook:
    return Runbook.model_validate({"id": "g", "title": "g", "kind": "procedure",
                                   "source": "3", "start": start, "steps": steps})


def chk(ok, fail="end"):
    return {"source": "3", "check": "x", "on": {"ok": ok, "fail": fail, "unknown": "end"}}


def test_cycle_through_plain_checks_is_illegal():
    g = RunbookGraph.of(runbook({"a": chk("b"), "b": chk("a")}))
    assert g.illegal_cycle() == ["a", "b", "a"]


def test_cycle_through_a_wait_is_allowed():
    wait = {"source": "3", "wait": "x", "on": {"ok": "a", "timeout": "end"}}
    g = RunbookGraph.of(runbook({"a": chk("w"), "w": wait}))
    assert g.illegal_cycle() is None


def test_cycle_through_a_retry_edge_is_allowed():
    g = RunbookGraph.of(runbook({"a": chk("end", {"step": "a", "max": 2})}))
    assert g.illegal_cycle() is None


def test_reachability_and_order():
    g = RunbookGraph.of(runbook({"a": chk("b"), "b": chk("end"), "c": chk("end")}))
    assert g.unreachable() == ["c"]
    assert g.order() == ["a", "b"]


def test_exports_name_every_step_and_edge():
    g = RunbookGraph.of(runbook({"a": chk("b"), "b": {"source": "3", "finding": "x"}}))
    dot, mermaid = g.to_dot(), g.to_mermaid()
    assert '"a" -> "b" [label="ok"]' in dot and 'shape=note' in dot
    assert "-->|ok|" in mermaid and "b (finding)" in mermaid
