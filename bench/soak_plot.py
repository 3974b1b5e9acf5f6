"""The soak's plot: RSS, counts, frame rate and forwarding cost over time (matplotlib)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def plot(result: dict[str, Any], path: Path) -> None:
    rows: list[dict[str, float]] = result["series"]
    minutes = [r["t"] / 60 for r in rows]
    fig, axes = plt.subplots(4, 1, figsize=(8, 9), sharex=True)
    rss, counts, fps, cost = axes
    rss.plot(minutes, [r["rss_mib"] for r in rows], color="tab:blue", lw=1)
    rss.set_ylabel("node RSS (MiB)")
    rss.set_title(f"RSS slope after warm-up: {result['rss_slope_mib_per_10min']:+.2f} MiB "
                  "per 10 min", fontsize=9)
    for key, color in (("tasks", "tab:orange"), ("fds", "tab:green"), ("pcs", "tab:red"),
                       ("threads", "tab:purple")):
        counts.plot(minutes, [r.get(key, 0.0) for r in rows], label=key, color=color, lw=1)
    counts.set_ylabel("count")
    counts.legend(loc="upper right", fontsize=8, ncol=4)
    timed = [r for r in rows if "fps" in r and r["active"]]
    fps.plot([r["t"] / 60 for r in timed], [r["fps"] for r in timed], color="tab:blue", lw=1,
             label="frames/s per steady subscriber")
    share = fps.twinx()
    share.plot([r["t"] / 60 for r in timed], [r["delivered"] for r in timed],
               color="tab:olive", lw=1, label="share of sent frames received")
    share.set_ylim(0, 1.1)
    share.set_ylabel("share", fontsize=8)
    fps.set_ylim(bottom=0)
    fps.set_ylabel("frames/s")
    fps.legend(loc="lower left", fontsize=7)
    share.legend(loc="lower right", fontsize=7)
    cost.plot([r["t"] / 60 for r in timed], [r["packets_per_cpu_s"] for r in timed],
              color="tab:gray", lw=1)
    cost.set_ylabel("forwarded packets\nper CPU-second")
    cost.set_xlabel("minutes (the room empties where the counts drop)")
    for ax in axes:
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=70)
    plt.close(fig)
