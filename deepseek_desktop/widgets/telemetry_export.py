"""The Monitor's exports: the series over the window shown as one CSV file, each plot as a PNG.
Both raise ``OSError`` for a place that cannot be written; the caller says so to the user."""

from __future__ import annotations

import csv
import re
from datetime import datetime
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from pyqtgraph.exporters import ImageExporter


def csv_cell(name: str, value: float) -> str:
    """Bytes as integers (``1073981440``, not ``1.07398e+09``); other figures to 6 digits; N/A as such."""
    if np.isnan(value):
        return "N/A"
    return str(int(round(value))) if name.endswith("_bytes") else f"{value:.6g}"


def write_csv(path: Path, data: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """``data``: series name -> (sample times, values), every series on the same sample times."""
    names = list(data)
    times = data[names[0]][0] if names else np.array([])
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["time", "time_iso", *names])
        for i, t in enumerate(times):
            iso = datetime.fromtimestamp(float(t)).astimezone().isoformat(timespec="milliseconds")
            writer.writerow([f"{t:.3f}", iso, *(csv_cell(n, data[n][1][i]) for n in names)])


def write_pngs(folder: Path, plots: dict[str, pg.PlotWidget]) -> list[Path]:
    """One file per plot, named after its title ("VRAM (GiB)" -> ``vram.png``)."""
    written = []
    for title, plot in plots.items():
        slug = re.sub(r"[^a-z0-9]+", "-", title.split(" (")[0].lower()).strip("-")
        path = Path(folder) / f"{slug}.png"
        if ImageExporter(plot.getPlotItem()).export(str(path)) is False:  # Qt says no more than that
            raise OSError(f"could not write {path}")
        written.append(path)
    return written
