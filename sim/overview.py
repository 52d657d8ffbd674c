"""The webservice overview stand-in (guidelines 9): ``serve_overview.py --config ...``.

One HTML page on port 8008 of max-exfl016 with the four panels of section 9, each made
from the real source at the time of the request: Maxwell status (``sinfo``), running
calibration jobs (``squeue -u xcal``), last characterization runs (the report tree), and
the end of ``web.log``.  Stdlib only, so that it imports nothing after it drops to xcal.
"""

from __future__ import annotations

import argparse
import html
import os
import subprocess
import sys
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from sim.webservice import drop_to, load_config

__all__ = ["main", "page"]

SQUEUE_FORMAT = "%.18i %60j %.3t %.10M %R"  # 4.2.3, 8.1


def _run(cfg: dict[str, Any], argv: list[str]) -> str:
    try:
        got = subprocess.run(argv, capture_output=True, text=True, timeout=10,
                             env={**os.environ, "SLURM_CONF": cfg["slurm_conf"]})
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{argv[0]} failed: {exc}"
    return (got.stdout + got.stderr).rstrip() or "(nothing)"


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


def page(cfg: dict[str, Any]) -> str:
    sinfo = _run(cfg, ["sinfo"])
    squeue = _run(cfg, ["squeue", "-u", cfg["account"], "-o", SQUEUE_FORMAT])
    root = Path(cfg["report_root"])
    runs = []
    for _mtime, folder in _reports(root):
        pdfs = sorted(p.name for p in folder.glob("*.pdf"))
        runs.append(f"{folder.parent.parent.name}  {folder.name}\n"
                    f"  Output path: {folder}\n  Output PDFs: {', '.join(pdfs) or '-'}")
    sections = [
        ("Maxwell status", sinfo),
        ("Running calibration jobs", squeue),
        ("Last characterization runs", "\n\n".join(runs) or f"none under {root}"),
        ("Webservice log", _tail(Path(cfg["log"]), int(cfg.get("log_lines", 100)))),
    ]
    body = "".join(f"<h2>{html.escape(t)}</h2>\n<pre>{html.escape(text)}</pre>\n"
                   for t, text in sections)
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
            "<title>Calibration webservice overview</title></head><body>\n"
            f"<h1>Calibration webservice overview</h1>\n{body}</body></html>\n")


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

        def log_message(self, format: str, *args: Any) -> None:
            sys.stderr.write(f"{self.address_string()} - {format % args}\n")

    return Overview


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="serve_overview.py")
    parser.add_argument("--config", required=True)
    args = parser.parse_args(argv)
    cfg = load_config(args.config)
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
