"""Evaluate one task the way a paper reports it: select hyper-parameters, then test over several seeds.

    python finetune/protocol.py --task ncbi_disease --data_dir datasets/NER --init_from runs/biobert/hf \
        --run_dir runs/ncbi [--protocol paper|biobert-code] [--seeds 1,2,3] [any finetune/run_task.py flag]

`--protocol paper` (default), BioBERT's paper: the batch size (`--batch_sizes`, default 16,32,64) and the
number of epochs (`--epoch_grid`, default 5,10,20) are chosen by the development-split score (F1 for NER and
RE), then each seed is trained on `train` with that setting and scored on `test`. By default one run per
batch size trains for the largest epoch count and its per-epoch devel scores (metrics.jsonl) give the
scores at 5, 10 and 20 epochs: its linear learning-rate decay spans 20 epochs, so "5 epochs" there is not a
5-epoch run. `--exact_grid` trains every (batch, epochs) pair on its own instead (3x the cost here).
A dataset without a development split (GAD, EU-ADR: their dev.tsv is empty) is selected by K-fold
cross-validation on its training data (`--cv_folds`, default 10, as the paper says): the training sentences
are split into K folds by a fixed shuffle (files under run_dir/cv_data), and the setting with the best mean
held-out score wins. QA (BioASQ) has no development split and the paper gives no selection for it: it runs
a fixed setting (`--epochs`, default 5, and the batch of the DeepSpeed profile or `--ds train_batch_size=N`).

`--protocol biobert-code`, BioBERT's released scripts: train on train+devel (`train_dev.tsv` where the
bundle has it, as its NER folders do; otherwise the two files concatenated into run_dir/train_dev_data and
said so) for a fixed `--epochs`, then test, with the task's recipe (finetune/configs/<task>.json: BioBERT's
README commands, NER 10 epochs; RE 3 epochs, batch 32, lr 2e-5; QA 5 epochs, batch 12, lr 5e-6; a `--ds`
of yours wins).

GAD and EU-ADR: `--task gad_3` evaluates one fold; `--task gad` runs the whole protocol on each fold
(`--folds`, default all ten) in run_dir/fold_01 ... (selection inside each fold's own training data, so no
fold's test sentences ever steer a choice) and reports the mean over folds, per seed.

Every sub-run is an ordinary run_task run in its own folder (select/..., seed_<n>), by the one skip / resume /
restart policy (biobert.checkpoint.run_or_resume): one whose results.json exists is reused (and says so), one
with a checkpoint continues from it, one stopped before its first checkpoint starts again, so a stopped
protocol continues where it stopped. Selection runs skip the Hugging Face export and have their checkpoints
deleted once scored (`--keep_checkpoints false`: the seed runs' too). run_dir/results.json holds the protocol,
the grid, each setting's devel (or CV) score, the chosen setting, each seed's test scores and their mean and
sample standard deviation (n - 1).

Python API: `run(ProtocolConfig(task=..., run_dir=..., job=run_task.job_from_args([...]), seeds=[1, 2, 3]))`;
`main(argv)` only parses into that config and calls it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
from pathlib import Path

if __package__ in (None, ""):  # run by path: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from biobert.config import config_dict, read_config_file, write_json  # noqa: E402
from biobert.errors import UserError, exit_on_user_error  # noqa: E402
from finetune import run_task  # noqa: E402
from finetune.protocol_data import train_dev_data  # noqa: E402
from finetune.selection import select, sub_run  # noqa: E402
from finetune.tasks.registry import folds_of, get_task  # noqa: E402

QA_FIXED_EPOCHS = 5.0
OWNED_FLAGS = (
    "--task",
    "--run_dir",
    "--seed",
    "--epochs",
    "--max_steps",
    "--train_split",
    "--eval_split",
    "--test_split",
    "--resume",
)


@dataclasses.dataclass
class ProtocolConfig:
    """One protocol evaluation. `job` holds the run_task settings every sub-run starts from (data_dir,
    init_from, the DeepSpeed profile and overrides, ...; run_task.job_from_args applies the task's recipe);
    the protocol sets each sub-run's task, run_dir, seed, splits, epochs, batch and resume itself."""

    task: str  # a run_task task, or gad / euadr: the protocol on each of `folds`
    run_dir: str  # the protocol's folder (its sub-runs inside)
    job: run_task.Job  # what every sub-run starts from
    protocol: str = "paper"  # "paper" or "biobert-code"
    seeds: list[int] = dataclasses.field(default_factory=lambda: [42])  # the final runs'; the first selects
    batch_sizes: list[int] = dataclasses.field(default_factory=lambda: [16, 32, 64])
    epoch_grid: list[int] = dataclasses.field(default_factory=lambda: [5, 10, 20])
    exact_grid: bool = False  # one run per (batch, epochs) instead of reading epochs off the longest run
    cv_folds: int = 10  # K of the CV selection without a devel split
    epochs: float | None = None  # biobert-code and QA: fixed epochs (None: the job's, i.e. the recipe's / 5 for QA)
    folds: list[int] = dataclasses.field(default_factory=list)  # gad / euadr: folds to run; empty: all
    keep_checkpoints: bool = True  # the seed runs' weights; selection runs never keep theirs

    @property
    def data_dir(self) -> str:
        return self.job.cfg.data_dir

    @property
    def init_from(self) -> str:
        return self.job.cfg.init_from

    def checked(self) -> ProtocolConfig:
        """A copy with sorted grids, or an error a user can act on (the CLI's flag names, the same fields)."""
        if self.protocol not in ("paper", "biobert-code"):
            raise UserError(f"--protocol {self.protocol!r}: choose paper or biobert-code")
        for name in ("seeds", "batch_sizes", "epoch_grid", "folds"):
            values = getattr(self, name)
            if (not values and name != "folds") or len(set(values)) != len(values):
                raise UserError(f"--{name} {values}: give at least one value, each once")
        known = folds_of(self.task)
        if not all(k in known for k in self.folds):
            raise UserError(
                f"--folds {self.folds}: "
                + (
                    f"{self.task}'s folds are numbered {min(known)} ... {max(known)}"
                    if known
                    else f"{self.task} has no cross-validation folds"
                )
            )
        if self.cv_folds < 2:
            raise UserError(f"--cv_folds {self.cv_folds}: cross-validation needs at least 2 folds")
        if self.job.cfg.max_steps:
            raise UserError(f"max_steps {self.job.cfg.max_steps}: the protocol's runs train by epochs; leave it 0")
        return dataclasses.replace(
            self,
            batch_sizes=sorted(self.batch_sizes),
            epoch_grid=sorted(self.epoch_grid),
            folds=sorted(self.folds or known),
        )


def ds_overrides(ds: list[str]) -> dict[str, str]:
    """DeepSpeed overrides (KEY.PATH=VALUE, a later one wins) as a dict."""
    out = {}
    for item in ds:
        key, _, value = item.partition("=")
        out[key.strip()] = value
    return out


def chosen_overrides(task, job: run_task.Job) -> dict[str, str]:
    """The DeepSpeed overrides the user chose (--config, --ds), without the task recipe's: job_from_args puts the
    recipe's first, and a job built without it holds only the user's."""
    recipe = run_task.RECIPES / f"{task.recipe}.json"
    recipe_ds = read_config_file(recipe)[1] if recipe.is_file() else []
    mine = job.ds[len(recipe_ds) :] if job.ds[: len(recipe_ds)] == recipe_ds else job.ds
    return ds_overrides(mine)


def job_record(job: run_task.Job) -> dict:
    """What a sub-run is built from, recorded and compared (the fields the protocol sets per sub-run left out)."""
    per_run = ("task", "run_dir", "seed", "resume", "resume_from", "progress", "log_every")  # or how a run reports
    run = {k: v for k, v in config_dict(job.cfg).items() if k not in per_run}
    return {"run": run, "deepspeed_config": job.deepspeed_config, "ds": list(job.ds)}


def check_run_task_flags(flags: list[str], who: str = "protocol.py") -> None:
    """Refuse, in the user's run_task flags, one that the protocol sets for each sub-run."""
    for flag in OWNED_FLAGS:
        if any(a == flag or a.startswith(flag + "=") for a in flags):
            raise UserError(f"{flag} is set by {who} for each sub-run; remove it (see --help)")


def _ints(text: str, flag: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"{flag} {text!r}: expected comma-separated integers, e.g. 1,2,3") from None


def _bool(text: str) -> bool:
    if text.lower() not in ("1", "true", "yes", "0", "false", "no"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return text.lower() in ("1", "true", "yes")


def parse_args(argv: list[str] | None) -> ProtocolConfig:
    """The protocol's flags, and every other flag as run_task's, parsed once into the base job (bad flags fail
    now, not after the selection)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
    )
    parser.add_argument("--task", required=True)
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--init_from", required=True)
    parser.add_argument("--run_dir", required=True)
    parser.add_argument("--protocol", choices=("paper", "biobert-code"), default="paper")
    parser.add_argument("--seeds", default="42", help="comma-separated seeds of the final runs (default 42)")
    parser.add_argument("--batch_sizes", default="16,32,64")
    parser.add_argument("--epoch_grid", default="5,10,20")
    parser.add_argument("--exact_grid", action="store_true", help="one run per (batch, epochs), no reuse")
    parser.add_argument("--cv_folds", type=int, default=10, help="K of the CV selection without a devel split")
    parser.add_argument("--epochs", type=float, default=None, help="biobert-code and QA: fixed epochs")
    parser.add_argument("--folds", default="", help="--task gad / euadr: the folds to run (default: all)")
    parser.add_argument(
        "--keep_checkpoints",
        type=_bool,
        nargs="?",
        const=True,
        default=True,
        metavar="BOOL",
        help="keep the seed runs' checkpoints (default: true; selection runs never keep theirs)",
    )
    args, flags = parser.parse_known_args(argv)
    check_run_task_flags(flags)
    folds = _ints(args.folds, "--folds")
    known = folds_of(args.task)
    first = known.get(min(folds, default=min(known, default=0)), args.task)  # a bad fold: refused by checked()
    job = run_task.job_from_args(
        [*flags, "--task", first, "--data_dir", args.data_dir, "--init_from", args.init_from, "--run_dir", args.run_dir]
    )
    return ProtocolConfig(
        task=args.task,
        run_dir=args.run_dir,
        job=job,
        protocol=args.protocol,
        seeds=_ints(args.seeds, "--seeds"),
        batch_sizes=_ints(args.batch_sizes, "--batch_sizes"),
        epoch_grid=_ints(args.epoch_grid, "--epoch_grid"),
        exact_grid=args.exact_grid,
        cv_folds=args.cv_folds,
        epochs=args.epochs,
        folds=folds,
        keep_checkpoints=args.keep_checkpoints,
    )


# --------------------------------------------------------------------------------------- the protocol


def mean_std(runs: list[dict]) -> tuple[dict, dict]:
    """Mean and sample standard deviation (n - 1; None for one run) of each numeric score all runs share."""
    keys = [
        k
        for k, v in runs[0].items()
        if isinstance(v, (int, float))
        and not isinstance(v, bool)
        and all(isinstance(r.get(k), (int, float)) for r in runs)
    ]
    mean = {k: statistics.fmean(r[k] for r in runs) for k in keys}
    std = {k: statistics.stdev([r[k] for r in runs]) if len(runs) > 1 else None for k in keys}
    return mean, std


def setting_for(
    task, files: dict[str, Path], base: run_task.Job, cfg: ProtocolConfig, run_dir: Path
) -> tuple[dict, run_task.Job, dict]:
    """(recorded setting, the final runs' job, selection record or {})."""
    if cfg.protocol == "biobert-code":  # BioBERT's released settings: the task's recipe (job_from_args applied it)
        data_dir, train_split, note = train_dev_data(task, files, cfg.data_dir, run_dir)
        epochs = cfg.epochs if cfg.epochs is not None else base.cfg.epochs
        job = base.with_(data_dir=data_dir, train_split=train_split, epochs=float(epochs))
        return {"epochs": epochs, "train_split": train_split, "train_data": note}, job, {}
    if task.kind == "qa":
        epochs = cfg.epochs if cfg.epochs is not None else QA_FIXED_EPOCHS
        note = "QA has no devel split and the paper gives no selection for it: a fixed setting"
        return {"epochs": epochs, "note": note}, base.with_(data_dir=cfg.data_dir, epochs=float(epochs)), {}
    selection = select(task, files, base, cfg, run_dir)
    bs, epochs = selection["chosen"]["train_batch_size"], selection["chosen"]["epochs"]
    job = base.with_(data_dir=cfg.data_dir, epochs=float(epochs), ds=[f"train_batch_size={bs}"])
    return {"train_batch_size": bs, "epochs": epochs}, job, selection


def _check_same_args(run_dir: Path, record: dict) -> None:
    path = run_dir / "protocol.json"
    if path.is_file() and json.loads(path.read_text()) != record:
        raise UserError(
            f"{run_dir} holds a protocol run with {json.loads(path.read_text())}, not {record}; "
            "its sub-runs must not be mixed with these. Use a new --run_dir or the original flags."
        )
    write_json(path, record)


def run_protocol(task_name: str, cfg: ProtocolConfig, run_dir: Path) -> dict:
    """The protocol on one run_task task (one fold of GAD / EU-ADR included) in `run_dir`."""
    task = get_task(task_name)
    files = task.splits(Path(cfg.data_dir))
    record = {
        "protocol": cfg.protocol,
        "task": task_name,
        "data_dir": cfg.data_dir,
        "init_from": cfg.init_from,
        "batch_sizes": cfg.batch_sizes,
        "epoch_grid": cfg.epoch_grid,
        "exact_grid": cfg.exact_grid,
        "cv_folds": cfg.cv_folds,
        "epochs": cfg.epochs,
        "selection_seed": cfg.seeds[0],
        "run_task": job_record(cfg.job),
    }
    if cfg.protocol == "paper" and task.kind != "qa":  # refused before anything is written
        if "train_batch_size" in chosen_overrides(task, cfg.job):
            raise UserError("--ds train_batch_size=...: the paper protocol picks the batch from --batch_sizes")
        if cfg.epochs is not None:
            raise UserError(
                "--epochs: the paper protocol picks the epochs from --epoch_grid (--epochs is for "
                "--protocol biobert-code and for QA)"
            )
    _check_same_args(run_dir, record)
    base = cfg.job.with_(task=task_name)
    setting, final, selection = setting_for(task, files, base, cfg, run_dir)
    test_split = "test"
    per_seed = {}
    for seed in cfg.seeds:
        job = final.with_(seed=seed, eval_split="", test_split=test_split)
        res = sub_run(run_dir / f"seed_{seed}", job, keep_checkpoints=cfg.keep_checkpoints)
        setting.setdefault("train_batch_size", res["train_batch_size"])
        per_seed[seed] = {k: v for k, v in res["scores"][test_split].items() if not isinstance(v, dict)}
    mean, std = mean_std(list(per_seed.values()))
    out = {
        "protocol": cfg.protocol,
        "task": task_name,
        "kind": task.kind,
        "init_from": cfg.init_from,
        "split": test_split,
        "headline": [k for k in task.headline if k in mean],
        "grid": {"batch_sizes": cfg.batch_sizes, "epochs": cfg.epoch_grid} if selection else None,
        "selection": selection or None,
        "setting": setting,
        "seeds": cfg.seeds,
        "runs": {str(s): v for s, v in per_seed.items()},
        "mean": mean,
        "std": std,
        "std_over": "seeds",
        "std_kind": "sample standard deviation (n - 1)",
        "run_task": job_record(cfg.job),
    }
    write_json(run_dir / "results.json", out)
    _print_summary(out)
    return out


def run_folds(dataset: str, cfg: ProtocolConfig, run_dir: Path) -> dict:
    """GAD / EU-ADR: the protocol on each fold on its own, then each seed's mean over the folds."""
    _check_same_args(run_dir, {"protocol": cfg.protocol, "task": dataset, "folds": "each fold: fold_NN/protocol.json"})
    names = folds_of(dataset)
    folds = {k: run_protocol(names[k], cfg, run_dir / f"fold_{k:02d}") for k in cfg.folds}
    per_seed = {s: mean_std([f["runs"][str(s)] for f in folds.values()])[0] for s in cfg.seeds}
    fold_means = [f["mean"] for f in folds.values()]
    mean, std = mean_std(list(per_seed.values()))
    std_over = "seeds"
    if len(cfg.seeds) == 1:  # one seed: the spread over folds, as crossval.py reports it
        mean, std = mean_std(fold_means)
        std_over = "folds"
    first = next(iter(folds.values()))
    out = {
        "protocol": cfg.protocol,
        "task": dataset,
        "kind": get_task(names[cfg.folds[0]]).kind,
        "init_from": cfg.init_from,
        "split": "test",
        "headline": first["headline"],
        "folds_run": cfg.folds,
        "complete": cfg.folds == list(names),
        "folds": {str(k): {"setting": f["setting"], "mean": f["mean"], "std": f["std"]} for k, f in folds.items()},
        "seeds": cfg.seeds,
        "runs": {str(s): v for s, v in per_seed.items()},
        "mean": mean,
        "std": std,
        "std_over": std_over,
        "std_kind": "sample standard deviation (n - 1)",
        "run_task": job_record(cfg.job),
    }
    write_json(run_dir / "results.json", out)
    _print_summary(out)
    return out


def _print_summary(out: dict) -> None:
    keys = out["headline"]
    print(
        f"{out['task']} ({out['protocol']}, {out['split']}): "
        + "  ".join(
            f"{k} {out['mean'][k]:.2f}" + (f" ± {out['std'][k]:.2f}" if out["std"].get(k) is not None else "")
            for k in keys
        )
        + f"  (std over {out['std_over']})",
        flush=True,
    )


def run(cfg: ProtocolConfig) -> dict:
    """The Python API: evaluate `cfg.task` by `cfg.protocol`; returns what run_dir/results.json holds."""
    cfg = cfg.checked()
    run_dir = Path(cfg.run_dir)
    if folds_of(cfg.task):
        return run_folds(cfg.task, cfg, run_dir)
    return run_protocol(cfg.task, cfg, run_dir)


@exit_on_user_error
def main(argv: list[str] | None = None) -> dict:
    return run(parse_args(argv))


if __name__ == "__main__":
    main()
