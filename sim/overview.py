"""The webservice overview stand-in (guidelines 9): ``serve_overview.py --config ...``.

One HTML page on port 8008 of max-exfl016 with the four panels of section 9, each made
from the real source at the time of the request: Maxwell status (9.1: jobs running, nodes
available on the partition and a recommendation, from ``squeue`` and ``sinfo``), running
calibration jobs (``squeue -u xcal``), last characterization runs (the report tree), and
the end of ``web.log``.  Section 8 requests darks "using the *Requesting Dark
Characterization* in the max-exfl016:8008 web page": a POST to ``/request_dark`` (form
fields instrument, karabo_id, proposal, runs) is handed to the webservice over ZMQ, and
its answer comes back as JSON.  The webservice's address is in ``webservice.yaml`` next to
this page's configuration.  Nothing is imported after it drops to xcal.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import subprocess
import sys
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import zmq

from sim.webservice import drop_to, load_config

__all__ = ["main", "page", "maxwell_status", "request_dark"]

SQUEUE_FORMAT = "%.18i %60j %.3t %.10M %R"  # 4.2.3, 8.1
REQUEST_TIMEOUT_MS = 30_000
_FIELDS = ("instrument", "karabo_id", "detector", "proposal", "runs")


def _call(cfg: dict[str, Any], argv: list[str]) -> tuple[bool, str]:
    """(whether it exited 0, what it printed)."""
    try:
        got = subprocess.run(argv, capture_output=True, text=True, timeout=10,
                             env={**os.environ, "SLURM_CONF": cfg["slurm_conf"]})
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"{argv[0]} failed: {exc}"
    return got.returncode == 0, (got.stdout + got.stderr).rstrip()


def _run(cfg: dict[str, Any], argv: list[str]) -> str:
    return _call(cfg, argv)[1] or "(nothing)"


def _reports(root: Path, limit: int = 20) -> list[tuple[float, Path]]:
    """Newest report folders: <root>/<instrument>/<det>/dark/dark_<proposal>_<runs>_<stamp>."""
    found = []
    for folder in root.glob("*/*/dark/dark_*"):
        try:
            found.append((folder.stat().st_mtime, folder))
        except OSError:
            continue
    return sorted(found, reverse=True)[:limit]


def _tail(path: Path, lines: int) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(deque(f, maxlen=lines)).rstrip() or "(empty)"
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror}"


def maxwell_status(cfg: dict[str, Any]) -> str:
    """Fig. 9.1: jobs running on Maxwell, nodes free on the partition, a recommendation."""
    partition = cfg.get("partition") or cfg.get("webservice", {}).get("partition", "upex")
    ok_jobs, running = _call(cfg, ["squeue", "-h", "-t", "RUNNING", "-o", "%i"])
    # A node is available when it can take a job now: idle, or with CPUs left (mixed).
    ok_nodes, nodes = _call(cfg, ["sinfo", "-h", "-p", partition, "-t", "idle,mixed",
                                  "-o", "%D"])
    jobs = str(len(running.split())) if ok_jobs else "?"
    idle = (nodes.strip() or "0") if ok_nodes else "?"
    if not idle.isdigit():
        recommendation = f"UNKNOWN (sinfo: {nodes or 'no answer'})"
    elif int(idle):
        recommendation = "SUBMIT TO THE GENERAL PARTITION"
    else:
        recommendation = "DON'T SUBMIT: NO NODE AVAILABLE, JOBS WILL WAIT"
    rows = [("Total jobs running", jobs),
            (f"Nodes available on {partition} partition", idle),
            ("Recommendation", recommendation)]
    return "\n".join(f"{k:<40} {v}" for k, v in rows)


def page(cfg: dict[str, Any]) -> str:
    sinfo = maxwell_status(cfg) + "\n\n" + _run(cfg, ["sinfo"])
    squeue = _run(cfg, ["squeue", "-u", cfg["account"], "-o", SQUEUE_FORMAT])
    root = Path(cfg["report_root"])
    runs = []
    for _mtime, folder in _reports(root):
        pdfs = sorted(p.name for p in [*folder.glob("*.pdf"), *folder.glob("index.html")])
        runs.append(f"{folder.parent.parent.name}  {folder.name}\n"
                    f"  Output path: {folder}\n  Output PDFs: {', '.join(pdfs) or '-'}")
    sections = [
        ("Maxwell status", sinfo),
        ("Running calibration jobs", squeue),
        ("Last characterization runs", "\n\n".join(runs + [
            f"Full list of dark characterizations: {root}/<instrument>/<detector>/dark"])),
        ("Webservice log", _tail(Path(cfg["log"]), int(cfg.get("log_lines", 100)))),
    ]
    body = "".join(f"<h2>{html.escape(t)}</h2>\n<pre>{html.escape(text)}</pre>\n"
                   for t, text in sections) + _FORM
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
            "<title>Calibration webservice overview</title></head><body>\n"
            f"<h1>Calibration webservice overview</h1>\n{body}</body></html>\n")


_FORM = ("<h2>Requesting Dark Characterization</h2>\n"
         "<form method=\"post\" action=\"/request_dark\">"
         + "".join(f"<label>{f} <input name=\"{f}\"></label> " for f in _FIELDS)
         + "<button>Request</button></form>\n")


def request_dark(cfg: dict[str, Any], form: dict[str, str]) -> dict[str, Any]:
    """Hand a dark request to the webservice (ZMQ) and return its answer."""
    service = cfg["webservice"]
    req: dict[str, Any] = {"action": "dark_request",
                           **{k: v for k, v in form.items() if k in _FIELDS and v}}
    sock = zmq.Context.instance().socket(zmq.REQ)
    sock.setsockopt(zmq.RCVTIMEO, REQUEST_TIMEOUT_MS)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(f"tcp://{service['bind']}:{service['zmq_port']}")
        sock.send_json(req)
        return dict(sock.recv_json())  # type: ignore[arg-type]
    except zmq.Again:
        return {"status": "FAILED", "message": "the webservice did not answer within "
                f"{REQUEST_TIMEOUT_MS // 1000} s"}
    finally:
        sock.close()


def _handler(cfg: dict[str, Any]) -> type[BaseHTTPRequestHandler]:
    class Overview(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            if self.path not in ("/", "/index.html"):
                self.send_error(404)
                return
            data = page(cfg).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            if self.path != "/request_dark":
                self.send_error(404)
                return
            length = int(self.headers.get("Content-Length") or 0)
            fields = parse_qs(self.rfile.read(length).decode(errors="replace"))
            answer = request_dark(cfg, {k: v[-1] for k, v in fields.items()})
            data = (json.dumps(answer) + "\n").encode()
            self.send_response(200 if answer.get("status") == "SUCCESS" else 502)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            sys.stderr.write(f"{self.address_string()} - {format % args}\n")

    return Overview


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="serve_overview.py")
    parser.add_argument("--config", required=True)
    args = parser.parse_args(argv)
    cfg = load_config(args.config)
    cfg["webservice"] = load_config(str(Path(args.config).with_name("webservice.yaml")))
    server = ThreadingHTTPServer((cfg["bind"], int(cfg["port"])), _handler(cfg))
    drop_to(cfg["account"])
    print(f"serving the overview on http://{cfg['bind']}:{cfg['port']}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
