"""PNG plots from results.jsonl files: tpmC against processing nodes (scale runs) and the
latency distribution (p50 / p90 / p99 / max per transaction type) of each system.

    python3 bench/tpcc/plot.py --scale <scale>/results.jsonl <compare>/results.jsonl \
        --latency <compare>/results.jsonl --out bench/tpcc
"""

import argparse
import json
import os
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def scale_plot(rows, out):
    pts = []
    for r in rows:
        m = re.search(r"-rf1-pn(\d+)$", r["label"])
        if m:
            pts.append((int(m.group(1)), r["tpmC"]))
    pts.sort()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o")
    for x, y in pts:
        ax.annotate(f"{y:,.0f}", (x, y), textcoords="offset points", xytext=(0, 6), ha="center")
    ax.set_xlabel("processing nodes")
    ax.set_ylabel("tpmC")
    ax.set_xticks([p[0] for p in pts])
    ax.set_ylim(bottom=0)
    ax.set_title("shmdb TPC-C tpmC by processing nodes (RF 1, one 2-core machine)")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "tpmc_by_processing_nodes.png"), dpi=110)


def latency_plot(rows, out):
    types = ["NEW_ORDER", "PAYMENT", "ORDER_STATUS", "DELIVERY", "STOCK_LEVEL"]
    fig, axes = plt.subplots(1, len(types), figsize=(16, 4.5), sharey=False)
    width = 0.8 / max(1, len(rows))
    for ax, t in zip(axes, types):
        for i, r in enumerate(rows):
            v = r["types"].get(t)
            if not v:
                continue
            qs = [v["p50_ms"] or 0, v["p90_ms"] or 0, v["p99_ms"] or 0, v["max_ms"] or 0]
            xs = [k + i * width for k in range(4)]
            ax.bar(xs, qs, width=width, label=r["label"])
        ax.set_xticks([k + 0.4 - width / 2 for k in range(4)])
        ax.set_xticklabels(["p50", "p90", "p99", "max"])
        ax.set_yscale("log")
        ax.set_title(t)
        ax.set_ylabel("ms")
    axes[0].legend(fontsize=7)
    fig.suptitle("TPC-C latency by transaction type (log scale)")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "latency_by_type.png"), dpi=110)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", nargs="*", default=[])
    ap.add_argument("--latency", nargs="*", default=[])
    ap.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)))
    a = ap.parse_args()
    if a.scale:
        scale_plot([r for p in a.scale for r in load(p)], a.out)
    rows = [r for p in a.latency for r in load(p)]
    if rows:
        latency_plot(rows, a.out)


if __name__ == "__main__":
    main()
