"""Run all cross-validation folds of GAD or EU-ADR and report mean ± standard deviation, as BioBERT does.

    python finetune/crossval.py --task gad --data_dir datasets/RE --init_from runs/biobert/hf \
        --run_dir runs/gad [any finetune/run_task.py flag, e.g. --epochs 3 --ds train_batch_size=32]

Each fold is one ordinary `run_task.py` run (in this process) in `run_dir/fold_01` ... `fold_10`, trained
on the fold's train.tsv and scored on its test.tsv; the folds have no development split, so
`--eval_split ""` is passed unless you pass `--eval_split` or a `--config` file. `run_dir/results.json`
holds each fold's scores and the mean and sample standard deviation (n - 1) of precision, recall, F1 and
accuracy over the folds of this invocation (`--folds`, default all); it is rewritten after every fold.
Resumable: a fold whose `results.json` exists is not re-run (and says so), a fold interrupted after a
checkpoint continues with `--resume`, one stopped before its first checkpoint starts again (the one policy,
biobert.checkpoint.run_or_resume). The resolved run_task settings are recorded in `run_dir/crossval.json`;
once a fold has started, re-running the run_dir with different settings is refused, so folds trained with
different settings are never averaged together.

Python API: `run(CrossvalConfig(task="gad", run_dir=..., job=run_task.job_from_args([...])))`; `main(argv)`
only parses into that config and calls it.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import statistics
import sys
from pathlib import Path

if __package__ in (None, ""):  # run by path: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from biobert import checkpoint  # noqa: E402
from biobert.config import config_dict, write_json  # noqa: E402
from biobert.errors import UserError, exit_on_user_error  # noqa: E402
from finetune import run_task  # noqa: E402
from finetune.tasks.registry import folded_datasets, folds_of  # noqa: E402

SUMMARY_KEYS = ("precision", "recall", "f1", "accuracy")


@dataclasses.dataclass
class CrossvalConfig:
    """All folds of GAD or EU-ADR with one run_task setting. `job`: what every fold runs (its task and run_dir
    are set per fold; the folds have no devel split, so its eval_split should be "")."""

    task: str  # gad or euadr
    run_dir: str  # one folder for all folds (fold_01 ... inside)
    job: run_task.Job
    folds: list[int] = dataclasses.field(default_factory=list)  # empty: all of the dataset's folds

    def checked(self) -> CrossvalConfig:
        known = folds_of(self.task)
        if not known:
            raise UserError(f"--task {self.task!r}: cross-validation runs {' or '.join(folded_datasets())}")
        folds = sorted(set(self.folds or known))
        if not all(k in known for k in folds):
            raise UserError(f"--folds {self.folds}: {self.task}'s folds are numbered {min(known)} ... {max(known)}")
        if not self.job.cfg.test_split:
            raise UserError("--test_split '': cross-validation scores each fold on its test split; keep it set")
        return dataclasses.replace(self, folds=folds)


def parse_args(argv: list[str] | None) -> CrossvalConfig:
    """crossval's flags; every other flag is run_task's, parsed once into the job every fold runs."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
    )
    parser.add_argument("--task", required=True, choices=folded_datasets())
    parser.add_argument("--run_dir", required=True, help="one folder for all folds (fold_01 ... inside)")
    parser.add_argument(
        "--folds",
        default="",
        help="comma-separated folds to run (default: all, 1 ... 10 for GAD and EU-ADR)",
    )
    args, flags = parser.parse_known_args(argv)
    try:
        folds = [int(k) for k in args.folds.split(",") if k.strip()]
    except ValueError:
        raise UserError(f"--folds {args.folds!r}: expected comma-separated fold numbers, e.g. 1,2,3") from None
    for flag in ("--task", "--run_dir", "--resume"):
        if any(a == flag or a.startswith(flag + "=") for a in flags):
            raise UserError(f"{flag} is set by crossval.py per fold; remove it from the run_task flags")
    # the folds have no devel split: no evaluation during training unless the user chose one (a --config file's
    # eval_split included, which a flag of ours would override)
    chose_eval = any(a.split("=")[0] in ("--eval_split", "--config") for a in flags)
    first = folds_of(args.task).get(min(folds, default=1), args.task)  # a bad fold is refused by checked()
    job = run_task.job_from_args([*flags, "--task", first, "--run_dir", args.run_dir])
    return CrossvalConfig(args.task, args.run_dir, job if chose_eval else job.with_(eval_split=""), folds)


def job_record(job: run_task.Job) -> dict:
    """What every fold is built from, recorded and compared (task and run_dir are set per fold)."""
    per_run = ("task", "run_dir", "resume", "resume_from", "progress", "log_every")  # or how a run reports
    run = {k: v for k, v in config_dict(job.cfg).items() if k not in per_run}
    return {"run": run, "deepspeed_config": job.deepspeed_config, "ds": list(job.ds)}


def summarize(fold_scores: dict[int, dict]) -> dict:
    """Mean and sample standard deviation (n - 1; None for a single fold) of each summary score."""
    mean, std = {}, {}
    for key in SUMMARY_KEYS:
        values = [s[key] for s in fold_scores.values() if key in s]
        if values:
            mean[key] = statistics.fmean(values)
            std[key] = statistics.stdev(values) if len(values) > 1 else None
    return {"mean": mean, "std": std}


def _check_same_job(run_dir: Path, task: str, job: run_task.Job) -> None:
    record = run_dir / "crossval.json"
    mine = {"task": task, "run_task": job_record(job)}
    started = any(run_dir.glob("fold_*/metrics.jsonl")) or any(run_dir.glob("fold_*/results.json"))
    if record.is_file() and started:
        theirs = json.loads(record.read_text())
        if theirs != mine:
            raise UserError(
                f"{run_dir} holds folds run with {theirs}, not {mine}; their scores must not be "
                "averaged with these. Use a new --run_dir, or repeat the original settings."
            )
    else:  # nothing trained yet: (re)record the settings
        write_json(record, mine)


def run_fold(task: str, fold: int, run_dir: Path, base: run_task.Job) -> tuple[dict, bool]:
    """(the fold's results, whether it was run now), by the one skip / resume / restart policy
    (checkpoint.run_or_resume): a finished fold is read back, never re-run."""
    fold_dir = run_dir / f"fold_{fold:02d}"
    state = checkpoint.run_or_resume(fold_dir)
    if state == "done":
        print(f"{task} fold {fold}: {fold_dir}/results.json exists, not re-run (delete the folder to redo it)")
        return json.loads((fold_dir / "results.json").read_text()), False
    doing = {"resume": "continuing from its checkpoint", "restart": "stopped before its first checkpoint; training"}
    print(f"{task} fold {fold}: {doing.get(state, 'training')} in {fold_dir}", flush=True)
    results = run_task.run(base.with_(task=folds_of(task)[fold], run_dir=str(fold_dir), resume=state == "resume"))
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


def run(cfg: CrossvalConfig) -> dict:
    """The Python API: run (or read back) each fold of `cfg.folds`; returns what run_dir/results.json holds,
    rewritten after every fold."""
    cfg = cfg.checked()
    run_dir, split = Path(cfg.run_dir), cfg.job.cfg.test_split
    _check_same_job(run_dir, cfg.task, cfg.job)
    fold_scores: dict[int, dict] = {}
    summary: dict = {}
    for fold in cfg.folds:
        results, _ = run_fold(cfg.task, fold, run_dir, cfg.job)
        fold_scores[fold] = results["scores"][split]
        summary = summarize(fold_scores)
        out = {
            "task": cfg.task,
            "split": split,
            "folds_run": sorted(fold_scores),
            "complete": sorted(fold_scores) == list(folds_of(cfg.task)),
            "std_kind": "sample standard deviation (n - 1)",
            **summary,
            "folds": {str(k): v for k, v in fold_scores.items()},
        }
        write_json(run_dir / "results.json", out)
    print(_table(cfg.task, split, fold_scores, summary), flush=True)
    return out


@exit_on_user_error
def main(argv: list[str] | None = None) -> dict:
    return run(parse_args(argv))


if __name__ == "__main__":
    main()
