"""Run all cross-validation folds of GAD or EU-ADR and report mean ± standard deviation, as BioBERT does.

    python finetune/crossval.py --task gad --data_dir datasets/RE --init_from runs/biobert/hf \
        --run_dir runs/gad [any finetune/run_task.py flag, e.g. --epochs 3 --ds train_batch_size=32]

Each fold is one ordinary `run_task.py` run (in this process) in `run_dir/fold_01` ... `fold_10`, trained
on the fold's train.tsv and scored on its test.tsv; the folds have no development split, so
`--eval_split ""` is passed unless you pass `--eval_split` or a `--config` file. `run_dir/results.json`
holds each fold's scores and the mean and sample standard deviation (n - 1) of precision, recall, F1 and
accuracy over the folds of this invocation (`--folds`, default all); it is rewritten after every fold.
Resumable: a fold whose `results.json` exists is not re-run (and says so), a fold interrupted after a
checkpoint continues with `--resume`. The run_task flags are recorded in `run_dir/crossval.json`; once a
fold has started, re-running the run_dir with different flags is refused, so folds trained with different
settings are never averaged together.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
from pathlib import Path

if __package__ in (None, ""):  # run by path: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from biobert import checkpoint  # noqa: E402
from biobert.config import write_json  # noqa: E402
from biobert.errors import UserError, exit_on_user_error  # noqa: E402
from finetune import run_task  # noqa: E402
from finetune.tasks.re_task import N_FOLDS, RE_DATASETS  # noqa: E402

SUMMARY_KEYS = ("precision", "recall", "f1", "accuracy")
CV_TASKS = [name for name, ds in RE_DATASETS.items() if ds.folds]


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
    )
    parser.add_argument("--task", required=True, choices=CV_TASKS)
    parser.add_argument("--run_dir", required=True, help="one folder for all folds (fold_01 ... inside)")
    parser.add_argument(
        "--folds",
        default=",".join(str(k) for k in range(1, N_FOLDS + 1)),
        help="comma-separated folds to run (default: all %(default)s)",
    )
    args, rest = parser.parse_known_args(argv)
    try:
        args.folds = sorted({int(k) for k in args.folds.split(",") if k.strip()})
    except ValueError:
        raise UserError(f"--folds {args.folds!r}: expected comma-separated fold numbers, e.g. 1,2,3") from None
    if not args.folds or not all(1 <= k <= N_FOLDS for k in args.folds):
        raise UserError(f"--folds {args.folds}: folds are numbered 1 ... {N_FOLDS}")
    for flag in ("--task", "--run_dir", "--resume"):
        if any(a == flag or a.startswith(flag + "=") for a in rest):
            raise UserError(f"{flag} is set by crossval.py per fold; remove it from the run_task flags")
    if any(a.split("=")[0] in ("--eval_split", "--config") for a in rest):
        return args, rest  # the user's choice (a --config file's eval_split would lose to our flag)
    return args, ["--eval_split", "", *rest]


def summarize(fold_scores: dict[int, dict]) -> dict:
    """Mean and sample standard deviation (n - 1; None for a single fold) of each summary score."""
    mean, std = {}, {}
    for key in SUMMARY_KEYS:
        values = [s[key] for s in fold_scores.values() if key in s]
        if values:
            mean[key] = statistics.fmean(values)
            std[key] = statistics.stdev(values) if len(values) > 1 else None
    return {"mean": mean, "std": std}


def _check_same_flags(run_dir: Path, task: str, flags: list[str]) -> None:
    record = run_dir / "crossval.json"
    mine = {"task": task, "run_task_flags": flags}
    started = any(run_dir.glob("fold_*/metrics.jsonl")) or any(run_dir.glob("fold_*/results.json"))
    if record.is_file() and started:
        theirs = json.loads(record.read_text())
        if theirs != mine:
            raise UserError(
                f"{run_dir} holds folds run with {theirs}, not {mine}; their scores must not be "
                "averaged with these. Use a new --run_dir, or repeat the original flags."
            )
    else:  # nothing trained yet: (re)record the flags
        write_json(record, mine)


def run_fold(task: str, fold: int, run_dir: Path, base: run_task.Job) -> tuple[dict, bool]:
    """(the fold's results, whether it was run now), by the one skip / resume / restart policy
    (checkpoint.run_or_resume): a finished fold is read back, never re-run."""
    fold_dir = run_dir / f"fold_{fold:02d}"
    state = checkpoint.run_or_resume(fold_dir)
    if state == "done":
        print(f"{task} fold {fold}: {fold_dir}/results.json exists, not re-run (delete the folder to redo it)")
        return json.loads((fold_dir / "results.json").read_text()), False
    print(
        f"{task} fold {fold}: {'continuing from its checkpoint' if state == 'resume' else 'training'} in {fold_dir}",
        flush=True,
    )
    results = run_task.run(base.with_(task=f"{task}_{fold}", run_dir=str(fold_dir), resume=state == "resume"))
    gc.collect()  # the fold's model and engine, before the next fold builds its own
    return results, True


def _table(task: str, split: str, fold_scores: dict[int, dict], summary: dict) -> str:
    cols = [k for k in SUMMARY_KEYS if k in summary["mean"]]
    lines = [f"{task} {split}  " + "".join(f"{k:>18}" for k in cols)]
    for fold, scores in fold_scores.items():
        lines.append(f"fold {fold:<6}" + " " * len(split) + "".join(f"{scores[k]:>18.2f}" for k in cols))
    cells = []
    for k in cols:
        std = summary["std"][k]
        cells.append(f"{summary['mean'][k]:.2f} ± {std:.2f}" if std is not None else f"{summary['mean'][k]:.2f}")
    lines.append(f"{'mean ± std':<11}" + " " * len(split) + "".join(f"{c:>18}" for c in cells))
    return "\n".join(lines)


@exit_on_user_error
def main(argv: list[str] | None = None) -> dict:
    args, flags = parse_args(argv)
    base = run_task.job_from_args([*flags, "--task", f"{args.task}_1", "--run_dir", args.run_dir])  # fail early
    cfg = base.cfg
    if not cfg.test_split:
        raise UserError("--test_split '': cross-validation scores each fold on its test split; keep it set")
    run_dir = Path(args.run_dir)
    _check_same_flags(run_dir, args.task, flags)
    fold_scores: dict[int, dict] = {}
    summary: dict = {}
    for fold in args.folds:
        results, _ = run_fold(args.task, fold, run_dir, base)
        fold_scores[fold] = results["scores"][cfg.test_split]
        summary = summarize(fold_scores)
        out = {
            "task": args.task,
            "split": cfg.test_split,
            "folds_run": sorted(fold_scores),
            "complete": sorted(fold_scores) == list(range(1, N_FOLDS + 1)),
            "std_kind": "sample standard deviation (n - 1)",
            **summary,
            "folds": {str(k): v for k, v in fold_scores.items()},
        }
        write_json(run_dir / "results.json", out)
    print(_table(args.task, cfg.test_split, fold_scores, summary), flush=True)
    return out


if __name__ == "__main__":
    main()
