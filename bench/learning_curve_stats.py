"""The learning curve's statistics: paired Bio − Base differences with 95% intervals, a paired bootstrap over
test sentences, the verdict per dataset, and the constant-classifier check.

Pairing: a seed fixes the training subset (both models see the same sentences) and the data order and head
initialisation, so Bio − Base is taken seed by seed and the interval is over seeds. Pooled over a dataset's
fractions, each seed's differences are averaged first (a seed's subsets nest, so they are not independent)
and the interval is again over seeds.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from pathlib import Path

import numpy as np

VERDICTS = ("shown", "not shown", "reversed")  # the verdicts of a difference with an interval
PENDING = "pending"  # fewer than 2 paired seeds: no interval, so no verdict yet
CONSTANT = "no verdict (constant classifiers)"  # every paired run of both models predicted one class


def t_quantile(p: float, df: int) -> float:
    """Student's t quantile (no scipy here): bisection on the CDF, integrated with Simpson's rule."""
    if df < 1:
        raise ValueError(f"df {df}: at least one degree of freedom is needed")
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)

    def cdf(x: float) -> float:  # for x >= 0
        n = 4000
        h = x / n
        f = [math.exp(log_c - (df + 1) / 2 * math.log1p((i * h) ** 2 / df)) for i in range(n + 1)]
        return 0.5 + h / 3 * (f[0] + f[-1] + 4 * sum(f[1:-1:2]) + 2 * sum(f[2:-1:2]))

    lo, hi = 0.0, 1.0
    while cdf(hi) < p:
        lo, hi = hi, hi * 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) < p else (lo, mid)
    return (lo + hi) / 2


def t_interval(values: Sequence[float], level: float = 0.95) -> dict:
    """Mean and its two-sided t-interval; with one value there is no interval (None bounds)."""
    n = len(values)
    mean = statistics.fmean(values)
    if n < 2:
        return {"n": n, "mean": mean, "sd": None, "lo": None, "hi": None}
    sd = statistics.stdev(values)
    half = t_quantile(0.5 + level / 2, n - 1) * sd / math.sqrt(n)
    return {"n": n, "mean": mean, "sd": sd, "lo": mean - half, "hi": mean + half}


def verdict(interval: dict) -> str:
    """ "shown" when the whole interval is above 0, "reversed" when below, "not shown" when it holds 0; "pending"
    without an interval (fewer than 2 seeds)."""
    if interval.get("lo") is None:
        return PENDING
    if interval["lo"] > 0:
        return "shown"
    if interval["hi"] < 0:
        return "reversed"
    return "not shown"


def paired(base: dict[int, float], bio: dict[int, float]) -> dict:
    """Bio − Base over the seeds both models finished, with its t-interval."""
    seeds = sorted(set(base) & set(bio))
    if not seeds:
        return {"n": 0, "mean": None, "sd": None, "lo": None, "hi": None, "seeds": []}
    return {**t_interval([bio[s] - base[s] for s in seeds]), "seeds": seeds}


def pooled(by_fraction: dict[float, tuple[dict[int, float], dict[int, float]]]) -> dict:
    """Over a dataset's fractions: each seed's mean Bio − Base over the fractions, then the t-interval over
    seeds. Every seed averages the same fractions: while a curve is unfinished, only the fractions finished
    (both models) for the most seeds are pooled, over the seeds they share; `fractions` lists them."""
    done = {f: set(base) & set(bio) for f, (base, bio) in by_fraction.items()}
    most = max((len(s) for s in done.values()), default=0)
    chosen = sorted(f for f, s in done.items() if s and len(s) == most)
    seeds = sorted(set.intersection(*(done[f] for f in chosen))) if chosen else []
    if not seeds:
        return {"n": 0, "mean": None, "sd": None, "lo": None, "hi": None, "seeds": [], "fractions": []}
    per_seed = [statistics.fmean(by_fraction[f][1][s] - by_fraction[f][0][s] for f in chosen) for s in seeds]
    return {**t_interval(per_seed), "seeds": seeds, "fractions": chosen}


# ------------------------------------------------------------------------------ per-sentence counts, bootstrap


def ner_counts(path: Path) -> np.ndarray:
    """[sentences, 3] (correct, predicted, gold) entity counts from a conlleval-format predictions file
    (`word<TAB>gold<TAB>pred`, a blank line between sentences). conlleval ends chunks at sentence breaks, so
    the counts add up over sentences to the corpus score."""
    from finetune.conlleval import conlleval

    rows, gold, pred = [], [], []
    for line in [*Path(path).read_text(encoding="utf-8").split("\n"), ""]:
        if line.strip():
            cells = line.rstrip("\r").split("\t")
            gold.append(cells[-2])
            pred.append(cells[-1])
        elif gold:
            r = conlleval([gold], [pred])
            rows.append((r["correct_chunks"], r["pred_chunks"], r["true_chunks"]))
            gold, pred = [], []
    return np.array(rows, dtype=np.int64).reshape(-1, 3)


def re_counts(path: Path, negative: str) -> tuple[np.ndarray, list[str]]:
    """[examples, 3] (correct, predicted, gold) of the scored (non-negative) classes from an RE predictions
    file (`index<TAB>sentence<TAB>label<TAB>prediction` with a header), micro-averaged as re_metrics does;
    and the predictions, for the constant-classifier check."""
    lines = [x for x in Path(path).read_text(encoding="utf-8").split("\n")[1:] if x.strip()]
    rows, preds = [], []
    for line in lines:
        cells = line.rstrip("\r").split("\t")
        g, p = cells[-2], cells[-1]
        rows.append((int(g == p and g != negative), int(p != negative), int(g != negative)))
        preds.append(p)
    return np.array(rows, dtype=np.int64).reshape(-1, 3), preds


def f1_from_counts(counts: np.ndarray) -> np.ndarray:
    """Entity / micro F1 in % from summed (correct, predicted, gold) along the last axis; 0 where undefined."""
    correct, predicted, gold = counts[..., 0], counts[..., 1], counts[..., 2]
    denom = predicted + gold
    return np.where(denom > 0, 200.0 * correct / np.maximum(denom, 1), 0.0)


def paired_bootstrap(
    base: Sequence[np.ndarray], bio: Sequence[np.ndarray], n_boot: int = 2000, seed: int = 0, level: float = 0.95
) -> dict:
    """Bio − Base (mean over the paired seeds) with a percentile interval from resampling test sentences:
    one resample of sentences is applied to every run, so the interval holds the test set's sampling noise
    with the pairing kept. `base[i]` and `bio[i]` are seed i's per-sentence counts."""
    if not base or len(base) != len(bio):
        raise ValueError(f"{len(base)} Base and {len(bio)} Bio runs: one of each per seed is needed")
    stacked = np.stack([*base, *bio], axis=1)  # [sentences, runs, 3]
    n, k = stacked.shape[0], len(base)
    observed = f1_from_counts(stacked.sum(0))
    rng = np.random.default_rng(seed)
    deltas = np.empty(n_boot)
    flat = stacked.reshape(n, -1)
    for b in range(n_boot):
        weights = np.bincount(rng.integers(0, n, n), minlength=n)
        f1 = f1_from_counts((weights @ flat).reshape(-1, 3))
        deltas[b] = (f1[k:] - f1[:k]).mean()
    alpha = (1 - level) / 2
    lo, hi = np.quantile(deltas, [alpha, 1 - alpha])
    return {
        "mean": float((observed[k:] - observed[:k]).mean()),
        "lo": float(lo),
        "hi": float(hi),
        "n_boot": n_boot,
        "units": n,
        "seeds": k,
    }
