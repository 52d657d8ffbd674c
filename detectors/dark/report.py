"""The dark report: an HTML page (Jinja) with matplotlib figures, in the report folder.

Its first section lists the input parameters, because section 8.2 B sends the reader
there first when constants were not injected; then what was injected (or "Version
already taken"); then offset and noise maps, their histograms, and the bad-pixel fraction
per module and per flag.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from detectors.dark._summary import ModuleSummary
from detectors.dark.errors import DarkError

__all__ = ["render_report", "FIGURES"]

FIGURES = ("offset_maps.png", "noise_maps.png", "offset_histograms.png",
           "noise_histograms.png", "bad_pixels_per_module.png", "bad_pixels_per_flag.png")
_GAINS = ("high", "medium", "low")

_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>{{ title }}</title>
<style>
body { font-family: sans-serif; margin: 2em; max-width: 80em; }
table { border-collapse: collapse; margin-bottom: 1.5em; }
td, th { border: 1px solid #bbb; padding: 0.2em 0.6em; text-align: left; }
.taken { color: #a60; } .injected { color: #070; } img { max-width: 100%; }
</style></head>
<body>
<h1>{{ title }}</h1>
<h2>Input parameters</h2>
<table>
{% for key, value in inputs %}<tr><th>{{ key }}</th><td>{{ value }}</td></tr>
{% endfor %}</table>
<h2>Operating conditions</h2>
<table>
{% for key, value in meta.conditions.items() %}<tr><th>{{ key }}</th><td>{{ value }}</td></tr>
{% endfor %}</table>
<h2>Checks of the runs</h2>
<ul>{% for line in meta.evidence %}<li>{{ line }}</li>{% endfor %}</ul>
<h2>Constants</h2>
<table>
<tr><th>Module</th><th>PDU</th><th>Calibration</th><th>Status</th><th>Details</th></tr>
{% for s in summaries %}{% for i in s.injections %}<tr>
<td>{{ s.karabo_da }} ({{ s.label }})</td><td>{{ i.physical_name or "" }}</td>
<td>{{ i.calibration }}</td><td class="{{ i.status }}">{{ i.status }}</td>
<td>{{ i.message }}</td></tr>
{% endfor %}{% endfor %}</table>
{% if not injected_any %}<p>No constant was injected by this run of the characterization.</p>
{% endif %}
<h2>Bad pixels</h2>
<table><tr><th>Module</th><th>bad (any flag)</th>
{% for flag in flags %}<th>{{ flag }}</th>{% endfor %}</tr>
{% for s in summaries %}<tr><td>{{ s.karabo_da }} ({{ s.label }})</td>
<td>{{ "%.3f %%"|format(100 * s.bad_fraction) }}</td>
{% for flag in flags %}<td>{{ "%.3f %%"|format(100 * s.bad_by_flag.get(flag, 0)) }}</td>
{% endfor %}</tr>{% endfor %}</table>
<h2>Figures</h2>
{% for name, caption in figures %}<figure><img src="{{ name }}" alt="{{ caption }}">
<figcaption>{{ caption }}</figcaption></figure>
{% endfor %}
</body></html>
"""


def _maps(summaries: Sequence[ModuleSummary], attr: str, unit: str, path: Path) -> None:
    import matplotlib.pyplot as plt

    n_g = getattr(summaries[0], attr).shape[0]
    fig, axes = plt.subplots(n_g, len(summaries), squeeze=False,
                             figsize=(1.6 * len(summaries) + 1.5, 3.2 * n_g))
    for g in range(n_g):
        stack = np.stack([getattr(s, attr)[g] for s in summaries])
        finite = stack[np.isfinite(stack)]
        lo, hi = np.percentile(finite, [1, 99]) if finite.size else (0.0, 1.0)
        for m, s in enumerate(summaries):
            ax = axes[g, m]
            im = ax.imshow(getattr(s, attr)[g], vmin=lo, vmax=hi, aspect="auto",
                           interpolation="nearest")
            ax.set_title(f"{s.karabo_da} {_GAINS[g] if n_g > 1 else ''}", fontsize=8)
            ax.set_axis_off()
        fig.colorbar(im, ax=axes[g, :].tolist(), label=unit)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _histograms(summaries: Sequence[ModuleSummary], attr: str, label: str, path: Path) -> None:
    import matplotlib.pyplot as plt

    hist = getattr(summaries[0], f"{attr}_hist")
    fig, axes = plt.subplots(1, hist.shape[0], squeeze=False, figsize=(5 * hist.shape[0], 3.5))
    for g in range(hist.shape[0]):
        ax = axes[0, g]
        for s in summaries:
            counts = getattr(s, f"{attr}_hist")[g]
            edges = getattr(s, f"{attr}_edges")[g]
            ax.stairs(counts, edges, label=s.karabo_da)
        ax.set_xlabel(label)
        ax.set_yscale("log")
        ax.set_title(_GAINS[g] if hist.shape[0] > 1 else "")
        if len(summaries) <= 16:
            ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _bad_pixels(summaries: Sequence[ModuleSummary], flags: list[str], folder: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(4.0, 0.5 * len(summaries) + 2), 3.5))
    ax.bar([s.karabo_da for s in summaries], [100 * s.bad_fraction for s in summaries])
    ax.set_ylabel("bad pixels (%)")
    ax.tick_params(axis="x", labelrotation=90, labelsize=7)
    fig.tight_layout()
    fig.savefig(folder / FIGURES[4], dpi=80)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(flags) + 2), 4.0))
    width = 0.8 / len(summaries)
    x = np.arange(len(flags))
    for m, s in enumerate(summaries):
        ax.bar(x + m * width, [100 * s.bad_by_flag.get(f, 0.0) for f in flags], width,
               label=s.karabo_da)
    ax.set_xticks(x + 0.4 - width / 2, flags, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("pixels × cells × gains (%)")
    if len(summaries) <= 16:
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(folder / FIGURES[5], dpi=80)
    plt.close(fig)


def render_report(report_dir: Path, meta: dict[str, Any],
                  summaries: Sequence[ModuleSummary]) -> Path:
    """Write the figures and ``index.html`` into ``report_dir``; return the page's path."""
    import jinja2
    import matplotlib

    matplotlib.use("Agg")
    if not summaries:
        raise DarkError("no module results to report")
    report_dir.mkdir(parents=True, exist_ok=True)
    flags = sorted({f for s in summaries for f in s.bad_by_flag})
    try:
        _maps(summaries, "offset_map", "offset (ADU)", report_dir / FIGURES[0])
        _maps(summaries, "noise_map", "noise (ADU)", report_dir / FIGURES[1])
        _histograms(summaries, "offset", "offset (ADU)", report_dir / FIGURES[2])
        _histograms(summaries, "noise", "noise (ADU)", report_dir / FIGURES[3])
        _bad_pixels(summaries, flags or ["none"], report_dir)
    except OSError as exc:
        raise DarkError(f"cannot write the report's figures in {report_dir}: {exc}") from exc
    captions = ("Offset per module and gain (median over memory cells)",
                "Noise per module and gain (median over memory cells)",
                "Offset histograms, all cells", "Noise histograms, all cells",
                "Bad-pixel fraction per module", "Bad-pixel fraction per flag")
    inputs = [("Detector", f"{meta['detector_type']} {meta['karabo_id']}"),
              ("Instrument", meta["instrument"]), ("Proposal", meta["proposal"]),
              ("Runs", ", ".join(map(str, meta["runs"]))),
              ("Input folders", ", ".join(meta["run_dirs"])),
              ("Trains per run", ", ".join(map(str, meta["trains"]))),
              ("Memory cells", meta["memory_cells"]),
              ("Constants valid from (creation date of the first run)", meta["begin_at"]),
              ("Report folder", meta["report_dir"])]
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    page = env.from_string(_TEMPLATE).render(
        title=Path(meta["report_dir"]).name, meta=meta, inputs=inputs, summaries=summaries,
        flags=flags, figures=list(zip(FIGURES, captions, strict=True)),
        injected_any=any(i.status == "injected" for s in summaries for i in s.injections))
    index = report_dir / "index.html"
    index.write_text(page, encoding="utf-8")
    return index
