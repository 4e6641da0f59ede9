"""How many optimizer steps a learning-curve dataset's small fractions need before fine-tuning learns more than a
constant classifier: the curve's own subset of TASK at each fraction (its seeded sampling), fine-tuned from one
model with the curve's settings for each minimum step count, and scored on a fixed seeded sample of the test
set. A run that predicts one class for every example (RE) or no entity (NER) is a constant classifier: its F1
says nothing about the encoder, so a curve point where every model is one measures nothing.

    .venv/bin/python bench/min_steps.py --task chemprot --fractions 0.05,0.2 --min_steps 100,500

Steps per run: learning_curve.steps_and_epochs, as the curve plans them (whole epochs, at least the minimum).
Writes bench/results/min_steps_<task>.json; learning_curve.TASK_MIN_STEPS cites it.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench")]

import learning_curve as lc  # noqa: E402
import learning_curve_report as lcr  # noqa: E402
import learning_curve_subsets as lcs  # noqa: E402

from biobert.errors import UserError, exit_on_user_error  # noqa: E402


def test_sample(task_name: str, data_dir: str, out: Path, n: int, seed: int) -> int:
    """Replace the subset folder's link to the test set by `n` of its examples drawn with `seed` (all if n <= 0
    or n >= the set's size); returns how many."""
    from finetune.protocol_data import layout, records, write_records
    from finetune.tasks.registry import get_task

    task = get_task(task_name)
    test = task.splits(Path(data_dir))["test"]
    header, rows = records(test, task.kind)
    if 0 < n < len(rows):
        rows = [rows[i] for i in sorted(random.Random(f"min_steps/{task_name}/{seed}").sample(range(len(rows)), n))]
    dest = out / layout(task) / test.name
    dest.unlink(missing_ok=True)
    write_records(dest, header, rows, task.kind)
    return len(rows)


def one_run(cfg: lc.CurveConfig, task: str, kind: str, fraction: float, floor: int, work: Path, a) -> dict:
    data_dir = str(Path(cfg.data_root) / kind)
    n = len(lcs.train_blocks(task, data_dir)[1])
    idx = lcs.sample_indices(n, fraction, task, a.seed)
    subset = work / f"f{fraction:g}_s{a.seed}"
    if not subset.exists():
        lcs.write_subset(task, data_dir, subset, idx)
        test_sample(task, data_dir, subset, a.test_sample, a.seed)
    job = lc.base_job(cfg, task, kind)
    from biobert.ds_config import load_ds_config, resolve_batch
    from finetune import run_task

    batch = resolve_batch(load_ds_config(job.deepspeed_config, job.ds), 1, job.deepspeed_config)[0]
    epochs, _, steps = lc.steps_and_epochs(len(idx), batch, cfg.epochs, floor)
    run_dir = work / "runs" / f"f{fraction:g}_min{floor}"
    t, usage = time.time(), resource.getrusage(resource.RUSAGE_SELF)
    run_task.run(
        job.with_(seed=a.seed, epochs=epochs, data_dir=str(subset), init_from=cfg.base_model, run_dir=str(run_dir))
    )
    end = resource.getrusage(resource.RUSAGE_SELF)
    f1, constant = lcr.run_score({"run_dir": str(run_dir), "kind": kind})
    scores = json.loads((run_dir / "results.json").read_text())["scores"]["test"]
    return {
        "fraction": fraction,
        "n_train": len(idx),
        "min_steps": floor,
        "steps": steps,
        "epochs": epochs,
        "f1": f1,
        "precision": scores.get("precision"),
        "recall": scores.get("recall"),
        "constant": constant,
        "wall_s": round(time.time() - t, 1),
        "cpu_s": round(end.ru_utime + end.ru_stime - usage.ru_utime - usage.ru_stime, 1),
    }


@exit_on_user_error
def main(argv: list[str] | None = None) -> dict:
    from cpu_info import machine

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="chemprot", help="a learning-curve dataset (default %(default)s)")
    p.add_argument("--fractions", default="0.05,0.2")
    p.add_argument("--min_steps", default="100,500", help="minimum step counts to try, comma-separated")
    p.add_argument("--seed", type=int, default=1, help="the curve's subset of this seed, and the run's seed")
    p.add_argument("--test_sample", type=int, default=2000, help="test examples scored (0: all)")
    p.add_argument("--model", default="", help="default: all-MiniLM-L6-v2 (installed), the curve's Base")
    p.add_argument("--data_root", default=lc.CurveConfig.data_root)
    p.add_argument("--ft_args", default="", help="more run_task flags, as the curve's --ft_args")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default %(default)s)")
    p.add_argument("--out", default="", help="default: bench/results/min_steps_<task>.json")
    a = p.parse_args(argv)
    import torch

    torch.set_num_threads(a.threads)
    try:
        fractions = [float(x) for x in a.fractions.split(",") if x]
        floors = [int(x) for x in a.min_steps.split(",") if x]
    except ValueError:
        raise UserError("--fractions / --min_steps: comma-separated numbers, e.g. 0.05,0.2 and 100,500") from None
    from finetune.tasks.registry import get_task

    kind = get_task(a.task).kind
    with tempfile.TemporaryDirectory() as tmp:
        cfg = lc.CurveConfig(
            base_model=a.model or lc.default_base_model(),
            data_root=a.data_root,
            work_dir=tmp,
            ft_args=tuple(a.ft_args.split()),
        )
        rows = []
        for f in fractions:
            for floor in floors:
                rows.append(one_run(cfg, a.task, kind, f, floor, Path(tmp), a))
                print(json.dumps(rows[-1]), flush=True)
    out = Path(a.out or REPO / "bench" / "results" / f"min_steps_{a.task}.json")
    data = {
        "task": a.task,
        "model": cfg.base_model,
        "seed": a.seed,
        "test_sample": a.test_sample,
        "settings": {"dtype": lc.resolve_dtype(cfg), "epochs_at_100": cfg.epochs, "ft_args": list(cfg.ft_args)},
        "runs": rows,
        "machine": machine(("torch", "deepspeed", "transformers")),
        "method": __doc__.split("\n\n", 1)[0],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {out}")
    return data


if __name__ == "__main__":
    main()
