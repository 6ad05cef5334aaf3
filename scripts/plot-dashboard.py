"""Draws the Grafana dashboard's panels from the answers Prometheus gave in DashboardTests.

Grafana does not run here, so this lays the panels out as the dashboard's gridPos does and plots each query's
series with its legend, in Grafana's dark colours. Usage: plot-dashboard.py DASHBOARD.json ANSWERS.json OUT.png
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

dashboard_path, answers_path, out = sys.argv[1:4]
dashboard = json.load(open(dashboard_path))
answers = json.load(open(answers_path))
by_panel = {}
for answer in answers:
    by_panel.setdefault(answer["panel"], []).append(answer)

BACKGROUND, PANEL, TEXT, GRID = "#111217", "#181b1f", "#ccccdc", "#2c3235"
COLOURS = ["#73bf69", "#f2cc0c", "#5794f2", "#ff9830", "#f2495c", "#b877d9", "#8ab8ff", "#fade2a", "#96d98d", "#ffa6b0"]
rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in dashboard["panels"])
CELL_W, CELL_H = 0.72, 0.36  # inches per grid column and row
CAPTION_H = 0.35  # inches below the panels
fig = plt.figure(figsize=(24 * CELL_W, rows * CELL_H + CAPTION_H), facecolor=BACKGROUND)
start = min(pt[0] for a in answers for s in a["series"] for pt in s["points"])


def units(unit):
    if unit == "bytes":
        return lambda v, _: f"{v / 2**20:.0f} MiB"
    if unit == "percentunit":
        return lambda v, _: f"{v * 100:.0f}%"
    if unit == "s":
        return lambda v, _: f"{v * 1000:.0f} ms" if 0 < v < 1 else f"{v:.0f} s"
    if unit in ("reqps", "ops"):
        return lambda v, _: f"{v:g}/s"
    return lambda v, _: f"{v:g}"


for panel in dashboard["panels"]:
    g = panel["gridPos"]
    left, width = g["x"] / 24, g["w"] / 24
    # Fractions of the figure; the caption's strip at the bottom is below every panel.
    scale = rows * CELL_H / (rows * CELL_H + CAPTION_H)
    top = g["y"] / rows * scale
    if panel["type"] == "row":
        fig.text(left + 0.005, 1 - top - (g["h"] / rows * scale) / 2, panel["title"], color=TEXT, fontsize=13, weight="bold", va="center")
        continue
    height = g["h"] / rows * scale
    # The panel's frame, then the plot inside it below its title.
    frame = fig.add_axes([left + 0.003, 1 - top - height + 0.004, width - 0.006, height - 0.008])
    frame.set_facecolor(PANEL)
    frame.set_xticks([]), frame.set_yticks([])
    for spine in frame.spines.values():
        spine.set_color(GRID)
    frame.set_title(panel["title"], color=TEXT, fontsize=10, loc="left", pad=-13, x=0.01)
    # Room for the title above the plot and the time axis below it, in inches.
    title_h, axis_h = 0.32 / (rows * CELL_H + CAPTION_H), 0.25 / (rows * CELL_H + CAPTION_H)
    ax = fig.add_axes([left + 0.03, 1 - top - height + axis_h, width - 0.045, height - axis_h - title_h])
    ax.set_facecolor(PANEL)
    ax.tick_params(colors=TEXT, labelsize=7)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.grid(color=GRID, linewidth=0.6)
    ax.yaxis.set_major_formatter(FuncFormatter(units(panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "short"))))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.0f}s"))
    colour = 0
    for answer in by_panel.get(panel["title"], []):
        for series in answer["series"]:
            xs = [pt[0] - start for pt in series["points"]]
            ys = [pt[1] for pt in series["points"]]
            ax.plot(xs, ys, color=COLOURS[colour % len(COLOURS)], linewidth=1.3, label=series["legend"])
            colour += 1
    if colour:
        ax.legend(loc="upper left", fontsize=6.5, facecolor=PANEL, edgecolor=GRID, labelcolor=TEXT, ncol=2 if colour > 3 else 1,
                  framealpha=0.85)
fig.text(0.5, CAPTION_H / 2 / (rows * CELL_H + CAPTION_H), "koala-router's Grafana dashboard, each panel's own queries answered by "
         "Prometheus scraping the router in DashboardTests: Koala down from about 8 s to 16 s, a refused rule reload at about 20 s",
         color=TEXT, fontsize=9, ha="center", va="center")
fig.savefig(out, dpi=80, facecolor=BACKGROUND)
print(f"plot-dashboard: wrote {out}")
