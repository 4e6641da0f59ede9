"""The protocol's data files: a task's train/devel/test files read as records (NER sentences, RE rows) and
written back, for the CV folds that replace a missing devel split and for BioBERT's train+devel training."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

from biobert.errors import UserError
from finetune.tasks.relation import HEADERS

CV_SHUFFLE_SEED = 0


def records(path: Path, kind: str) -> tuple[str, list[str]]:
    """(header line or "", records) of a task file: NER sentences are blank-line blocks, RE rows lines."""
    lines = path.read_bytes().decode("utf-8").split("\n") if path.is_file() else []  # no newline translation
    if kind == "re":
        rows = [line for line in lines if line.strip(" \t\r")]
        if rows and tuple(rows[0].rstrip("\r").split("\t")) in HEADERS:
            return rows[0] + "\n", rows[1:]
        return "", rows
    blocks, current = [], []
    for line in lines:
        if line.strip(" \t\r"):
            current.append(line)
        elif current:
            blocks.append("\n".join(current))
            current = []
    if current:
        blocks.append("\n".join(current))
    return "", blocks


def write_records(path: Path, header: str, rows: list[str], kind: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sep = "\n" if kind == "re" else "\n\n"
    path.write_text(header + sep.join(rows) + "\n", encoding="utf-8")


def layout(task) -> Path:
    """Where the task looks for its files under a data root: NCBI-disease/, GAD/3/, chemprot/."""
    if task.kind == "ner":
        return Path(task.dataset)
    return Path(task.dataset.folders[0], *([str(task.fold)] if task.fold else []))


def has_devel(task, files: dict[str, Path]) -> bool:
    return "devel" in files and bool(records(files["devel"], task.kind)[1])


def make_cv_folds(task, files: dict[str, Path], root: Path, k: int) -> list[Path]:
    """K data roots, fold i holding train = the other folds and devel = fold i, by a fixed shuffle."""
    header, rows = records(files["train"], task.kind)
    if len(rows) < k:
        raise UserError(f"{files['train']}: {len(rows)} training examples cannot make {k} CV folds")
    order = list(range(len(rows)))
    random.Random(CV_SHUFFLE_SEED).shuffle(order)
    roots = []
    for i in range(k):
        held = set(order[i::k])
        folder = root / f"fold_{i + 1:02d}" / layout(task)
        if not (folder / "devel.tsv").is_file():
            held_out = [rows[j] for j in sorted(held)]
            write_records(folder / "train.tsv", header, [r for j, r in enumerate(rows) if j not in held], task.kind)
            write_records(folder / "devel.tsv", header, held_out, task.kind)
            write_records(folder / "test.tsv", header, held_out, task.kind)  # required by the reader; unused
        roots.append(root / f"fold_{i + 1:02d}")
    return roots


def train_dev_data(task, files: dict[str, Path], data_dir: str, run_dir: Path) -> tuple[str, str, str]:
    """(data_dir, train_split, what was done) to train on train+devel as BioBERT's released code does."""
    if "train_dev" in files:
        return data_dir, "train_dev", f"trained on the bundle's {files['train_dev']}"
    if task.kind == "qa" or not has_devel(task, files):
        return data_dir, "train", f"{task.name} has no devel split: trained on train alone"
    root = run_dir / "train_dev_data"
    folder = root / layout(task)
    header, train = records(files["train"], task.kind)
    _, devel = records(files["devel"], task.kind)
    write_records(folder / "train.tsv", header, train + devel, task.kind)
    shutil.copyfile(files["test"], folder / "test.tsv")
    note = f"no train_dev.tsv: trained on {files['train']} + {files['devel']} concatenated into {folder}"
    print(f"{task.name}: {note}", flush=True)
    return str(root), "train", note
