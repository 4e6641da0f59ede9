"""The learning curve's training subsets: seed s draws one fixed permutation of a dataset's training examples
and a fraction is its prefix, so fractions nest (1% ⊂ 5% ⊂ 20%) and every model of the curve trains on the same
examples. A subset is a dataset folder in the task's layout: the sampled training file, links to the original
devel and test files."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

from biobert.errors import UserError


def sample_indices(n: int, fraction: float, task: str, seed: int) -> list[int]:
    """The training rows of (task, fraction, seed), in file order: a prefix of one fixed permutation per
    (task, seed), so 1% ⊂ 5% ⊂ 20% for a seed; at least one row."""
    if not 0 < fraction <= 1:
        raise UserError(f"fraction {fraction}: expected a value in (0, 1]")
    order = random.Random(f"learning_curve/{task}/{seed}").sample(range(n), n)
    return sorted(order[: max(1, round(n * fraction))])


def train_blocks(task_name: str, data_dir: str | Path) -> tuple[str, list[str], Path, dict]:
    """(header, one record per training example, the dataset folder, split files): an NER sentence or an RE
    row as finetune.protocol_data reads them (the protocol's CV folds and train+devel use the same), copied as
    they are in the file."""
    from finetune.protocol_data import records
    from finetune.tasks.registry import get_task

    task = get_task(task_name)
    files = task.splits(Path(data_dir))
    header, rows = records(files["train"], task.kind)
    return header, rows, files["train"].parent, files


def write_subset(task_name: str, data_dir: str | Path, out_root: Path, indices: list[int]) -> dict:
    """A dataset folder under out_root in the task's layout (GAD/1/, NCBI-disease/): the sampled training
    examples, and links to the original devel and test files. Returns its counts."""
    from finetune.protocol_data import layout, write_records
    from finetune.tasks.registry import get_task

    task = get_task(task_name)
    header, rows, _, files = train_blocks(task_name, data_dir)
    out = out_root / layout(task)
    chosen = [rows[i] for i in indices]
    write_records(out / "train.tsv", header, chosen, task.kind)
    for split, path in files.items():
        if split in ("train", "train_dev"):  # train_dev would bring the whole training set back
            continue
        link = out / path.name
        if not link.exists():
            try:
                link.symlink_to(path.resolve())
            except OSError:
                shutil.copyfile(path, link)
    return {"train_examples": len(chosen), "of": len(rows), "folder": str(out)}


def subset_dir(work_dir: str | Path, task: str, fraction: float, seed: int) -> Path:
    return Path(work_dir) / "subsets" / task / f"f{fraction:g}_s{seed}"


def prepare_subsets(plan: dict, data_root: str | Path, work_dir: str | Path) -> dict:
    """Every (dataset, fraction < 1, seed) subset written once, its counts in WORK_DIR/subsets/subsets.json."""
    record = {}
    for r in plan["runs"]:
        key = f"{r['task']}/f{r['fraction']:g}_s{r['seed']}"
        if r["fraction"] >= 1 or key in record:
            continue
        data_dir = str(Path(data_root) / r["kind"])
        n = len(train_blocks(r["task"], data_dir)[1])
        idx = sample_indices(n, r["fraction"], r["task"], r["seed"])
        record[key] = write_subset(r["task"], data_dir, Path(r["data_dir"]), idx)
    path = Path(work_dir) / "subsets" / "subsets.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1) + "\n")
    return record
