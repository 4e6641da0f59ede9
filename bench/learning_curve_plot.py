"""learning_curve.png: F1 vs training fraction, every model with its 95% band, a panel per dataset titled with
its verdicts (bench/learning_curve_report.py draws it from the collected results)."""

from __future__ import annotations

from pathlib import Path

import learning_curve_stats as st

COLORS = ("tab:blue", "tab:red", "tab:green", "tab:purple", "tab:orange")
SHORT = {st.CONSTANT: "constant classifiers"}  # a panel title's room


def _band(values: list[float]) -> tuple[float, float]:
    ci = st.t_interval(values)
    return ci["mean"], (ci["hi"] - ci["mean"]) if ci["hi"] is not None else 0.0


def plot(results: dict, path: Path) -> None:
    """F1 vs training fraction (log x), Base and Bio, mean over seeds with its 95% t-band; a panel per dataset."""
    import matplotlib
    from learning_curve_text import label

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(1, len(results))
    cols = min(3, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for ax, r in zip(axes.flat, results.values()):
        for model, color in zip(next(iter(r["fractions"].values()))["scores"], COLORS):
            xs, means, halves = [], [], []
            for f, e in r["fractions"].items():
                vals = list(e["scores"][model].values())
                if vals:
                    m, h = _band(vals)
                    xs.append(float(f))
                    means.append(m)
                    halves.append(h)
            if xs:  # the band, and error bars so that a single point shows its interval too
                lo = [max(0.0, m - h) for m, h in zip(means, halves)]  # F1 lives in [0, 100]: both clipped
                hi = [min(100.0, m + h) for m, h in zip(means, halves)]
                yerr = [[m - x for m, x in zip(means, lo)], [x - m for m, x in zip(means, hi)]]
                ax.errorbar(xs, means, yerr=yerr, fmt="o-", color=color, capsize=3, label=label(model))
                ax.fill_between(xs, lo, hi, color=color, alpha=0.2)
        ax.set_xscale("log")
        ticks = [float(f) for f in r["fractions"]]
        ax.set_xticks(ticks, [f"{t:.0%}" for t in ticks])
        ax.minorticks_off()
        verdicts = "; ".join(f"{label(b)}: {SHORT.get(v, v)}" for b, v in r["verdict"].items())
        ax.set_title(f"{r['name']}\n{verdicts}", fontsize=9)
        ax.set_xlabel("fraction of training sentences")
        ax.set_ylabel("test F1")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no finished runs yet", ha="center", transform=ax.transAxes, color="gray")
    for ax in list(axes.flat)[len(results) :]:
        ax.axis("off")
    if not results:
        axes.flat[0].text(0.5, 0.5, "no dataset in the plan", ha="center")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
