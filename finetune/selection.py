"""The paper protocol's hyper-parameter selection (finetune/protocol.py): every (batch, epochs) of the grid
scored on the development split, or by K-fold cross-validation on train where a dataset has none; and the one
sub-run policy every protocol run goes through (skip a finished run, resume an interrupted one, restart one
stopped before its first checkpoint).
"""

from __future__ import annotations

import gc
import json
import shutil
import statistics
from pathlib import Path
from typing import TYPE_CHECKING

from biobert import checkpoint
from biobert.errors import UserError
from finetune import run_task
from finetune.protocol_data import CV_SHUFFLE_SEED, has_devel, make_cv_folds

if TYPE_CHECKING:
    from finetune.protocol import ProtocolConfig


def sub_run(run_dir: Path, job: run_task.Job, keep_checkpoints: bool = True) -> dict:
    """One run_task run in `run_dir`, by the one skip / resume / restart policy (checkpoint.run_or_resume)."""
    state = checkpoint.run_or_resume(run_dir)
    if state == "done":
        print(f"{run_dir}: results.json exists, reused (delete the folder to redo it)", flush=True)
        results = json.loads((run_dir / "results.json").read_text())
    else:
        doing = {"resume": "continuing from its checkpoint", "restart": "stopped before its first checkpoint; "}
        print(f"{run_dir}: {doing.get(state, '')}{'' if state == 'resume' else 'training'}", flush=True)
        results = run_task.run(job.with_(run_dir=str(run_dir), resume=state == "resume"))
        gc.collect()  # the run's model and engine, before the next run builds its own
    if not keep_checkpoints:  # scored: its results and predictions stay, its weights go
        shutil.rmtree(checkpoint.checkpoint_dir(run_dir), ignore_errors=True)
        (run_dir / "hf").unlink(missing_ok=True)
    return results


def epoch_scores(run_dir: Path, results: dict, epochs: list[int], metric: str) -> dict[int, float]:
    """The devel score after each of `epochs`, from the per-epoch evaluations in metrics.jsonl."""
    steps_per_epoch = results["steps"] / results["epochs"]
    evals = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record.get("kind") == "eval" and f"devel_{metric}" in record:
            evals[record["step"]] = record[f"devel_{metric}"]
    out = {}
    for e in epochs:
        step = round(e * steps_per_epoch)
        if step not in evals:
            raise UserError(
                f"{run_dir}/metrics.jsonl: no devel evaluation at step {step} (epoch {e}); "
                "leave --eval_every at its default (once per epoch) or pass --exact_grid"
            )
        out[e] = evals[step]
    return out


def grid_scores(
    task, base: run_task.Job, data_dir: str, sub: Path, cfg: ProtocolConfig, seed: int
) -> dict[tuple[int, int], float]:
    """Devel score of every (batch, epochs) of the grid trained on `data_dir`'s train split (no HF export: the
    selection runs' checkpoints are deleted once scored)."""
    metric = task.select_metric
    common = base.with_(data_dir=data_dir, seed=seed, eval_split="devel", test_split="", export_hf=False)
    scores = {}
    for bs in cfg.batch_sizes:
        if cfg.exact_grid:
            for e in cfg.epoch_grid:
                job = common.with_(epochs=float(e), ds=[f"train_batch_size={bs}"])
                res = sub_run(sub / f"bs{bs}_ep{e}", job, keep_checkpoints=False)
                scores[bs, e] = res["scores"]["devel"][metric]
        else:
            run = sub / f"bs{bs}"
            job = common.with_(epochs=float(max(cfg.epoch_grid)), ds=[f"train_batch_size={bs}"])
            res = sub_run(run, job, keep_checkpoints=False)
            for e, value in epoch_scores(run, res, cfg.epoch_grid, metric).items():
                scores[bs, e] = value
    return scores


def select(task, files: dict[str, Path], base: run_task.Job, cfg: ProtocolConfig, run_dir: Path) -> dict:
    """The paper's selection: devel score, or mean K-fold CV score on train where there is no devel."""
    seed = cfg.seeds[0]
    if has_devel(task, files):
        method, per_fold = "devel", {}
        scores = grid_scores(task, base, cfg.data_dir, run_dir / "select", cfg, seed)
    else:
        method = f"{cfg.cv_folds}-fold cross-validation on train"
        roots = make_cv_folds(task, files, run_dir / "cv_data", cfg.cv_folds)
        per_fold = {
            i + 1: grid_scores(task, base, str(root), run_dir / "select" / f"cv{i + 1:02d}", cfg, seed)
            for i, root in enumerate(roots)
        }
        scores = {key: statistics.fmean(f[key] for f in per_fold.values()) for key in per_fold[1]}
    best = max(scores, key=lambda key: scores[key])  # ties: the first, i.e. the smaller batch and epochs
    note = (
        "each epoch count read from one run per batch size trained for the largest; its linear "
        "learning-rate decay spans that many epochs"
        if not cfg.exact_grid
        else "one run per setting"
    )
    return {
        "method": method,
        "metric": f"{'devel' if method == 'devel' else 'cv'}_{task.select_metric}",
        "seed": seed,
        "exact_grid": cfg.exact_grid,
        "note": note,
        "scores": [{"train_batch_size": bs, "epochs": e, "score": v} for (bs, e), v in scores.items()],
        **(
            {
                "cv_folds": cfg.cv_folds,
                "cv_shuffle_seed": CV_SHUFFLE_SEED,
                "per_fold": {
                    str(i): [{"train_batch_size": bs, "epochs": e, "score": v} for (bs, e), v in f.items()]
                    for i, f in per_fold.items()
                },
            }
            if per_fold
            else {}
        ),
        "chosen": {"train_batch_size": best[0], "epochs": best[1], "score": scores[best]},
    }
