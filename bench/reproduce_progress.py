"""bench/reproduce.py's progress lines and time estimates: what each stage costs (priors measured by the
recorded runs, refined from this work dir's finished stages) and the runner that times every stage.

Fine-tuning work is counted in WordPieces estimated from each split's text, times epochs and seeds, plus a
fixed cost per run; pre-training in optimizer steps; data_prep in bytes.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import resource
import time
from pathlib import Path

from biobert.config import read_json, write_json

KINDS = ("ner", "re", "qa")
# ETA priors until this work dir has measured its own rates (2 shared cores, all-MiniLM-L6-v2); pre-training's
# comes from the plan's own CPU estimate (reproduce.py, est_pretrain_cpu_h).
# Fine-tuning: wall seconds per estimated WordPiece (count_tokens) as the recorded runs measured them, the
# fixed cost of each run apart (NER 4.9e-4 on 4 datasets, ChemProt 5.5e-4, EU-ADR 6.1e-4, BioASQ 3.3e-4).
PRIOR_S_PER_UNIT = {"ner": 5e-4, "re": 6e-4, "qa": 3.5e-4, "data_prep": 1e-6, "base_heldout": 40.0}
# Fixed cost of one fine-tuning run (model and engine set-up, evaluation, saving), whatever its size: 20 s
# here, fitted to EU-ADR's 30 runs of 10 steps (893 s, of which 262 s are its tokens at ChemProt's rate).
RUN_OVERHEAD_S = 20.0
HEAD_COST = 0.5  # a heads-only step relative to a full one (no backward through the encoder), for the estimate
CHARS_PER_TOKEN = 4.2  # English biomedical text per WordPiece, about (for the ETA only)
UNITS = "wordpieces x epochs x seeds"  # of a fine-tuning stage; recorded with each finished stage


def count_tokens(t: dict, protocol: str) -> tuple[float, float]:
    """(training, test) WordPieces over all folds, estimated from the text's characters (labels, tags and
    JSON keys left out); only for the ETA: a run's time follows its tokens, not its sentence count (a
    ChemProt sentence is twice an NCBI-disease one)."""
    from finetune.tasks.registry import get_task

    def text_chars(path: Path) -> int:
        text = path.read_text(encoding="utf-8")
        if t["kind"] == "ner":  # word<TAB>tag lines
            return sum(len(line.split("\t", 1)[0]) + 1 for line in text.splitlines())
        if t["kind"] == "re":  # [index<TAB>]sentence<TAB>label lines
            return sum(len(max(line.split("\t"), key=len)) for line in text.splitlines())
        return len(text)  # QA JSON: contexts and questions dominate

    counts = {"train": 0.0, "test": 0.0}
    for name in [f"{t['task']}_{k}" for k in t["folds"]] or [t["task"]]:
        files = get_task(name).splits(Path(t["data_dir"]))
        use = ["train"] + (["devel"] if protocol == "biobert-code" and t["kind"] != "qa" and "devel" in files else [])
        for split in [*use, "test"]:
            counts["test" if split == "test" else "train"] += text_chars(files[split]) / CHARS_PER_TOKEN
    return counts["train"], counts["test"]


def cpu_seconds() -> float:
    """CPU time of this process and of every child it waited for (the launcher's ranks included)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def hms(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def unfinished(name: str) -> str:
    """timings.json's key for a stage's attempts that did not finish (preempted, failed)."""
    return f"{name} (unfinished)"


class Progress:
    """A line per stage start and end with the elapsed time and an ETA of what is left: seconds per unit of
    work (per kind) measured in this work dir, priors until there is a measurement."""

    def __init__(self, plan: dict, stages: list[dict]):
        self.path = Path(plan["work_dir"]) / "timings.json"
        self.timings = read_json(self.path, "timings") if self.path.is_file() else {}
        self.stages, self.t0, self.plan = stages, time.time(), plan

    @staticmethod
    def runs(name: str, record: dict) -> int:
        """Fine-tuning runs of a finished stage (timings written before "runs" was kept: from its name)."""
        m = re.search(r"\((\d+) runs\)$", name)
        return int(record.get("runs", m.group(1) if m else 0))

    def units(self, name: str, record: dict) -> float | None:
        """A finished stage's units as this plan counts them. A fine-tuning stage that is not in this plan
        counts only if it was measured in the same units (those recorded before UNITS counted sentences)."""
        stage = next((s for s in self.stages if s["name"] == name), None)
        if stage is not None:
            return stage["units"]
        if record.get("kind") in KINDS and record.get("units_of") != UNITS:
            return None
        return record.get("units")

    def measured(self, kind: str) -> list[tuple[float, float]]:
        """(wall seconds less the runs' fixed cost, units) of each finished stage of `kind`."""
        out = []
        for name, t in self.timings.items():
            units = t["units_measured"] if "units_measured" in t else self.units(name, t)
            if t.get("kind") == kind and units:
                fixed = RUN_OVERHEAD_S * self.runs(name, t) if kind in KINDS else 0.0
                out.append((max(0.05 * t["wall_s"], t["wall_s"] - fixed), units))
        return out

    def rate(self, kind: str) -> float:
        """Seconds per unit of work, the fixed cost of each fine-tuning run set apart."""
        if done := self.measured(kind):
            return sum(w for w, _ in done) / sum(u for _, u in done)
        if kind in KINDS:  # not measured yet: the prior, scaled as the measured kinds compare with theirs
            seen = [k for k in KINDS if self.measured(k)]
            return PRIOR_S_PER_UNIT[kind] * (
                sum(self.rate(k) / PRIOR_S_PER_UNIT[k] for k in seen) / len(seen) if seen else 1.0
            )
        if kind in ("pretrain", "pretrain_heads"):  # per step: the plan's CPU-hours over the ranks' threads
            p, cpus = self.plan, os.cpu_count() or 1
            threads = min(p["nproc"] * int(os.environ.get("OMP_NUM_THREADS", max(1, cpus // p["nproc"]))), cpus)
            # est_pretrain_cpu_h counts the held-out evaluations and the model's size, not only the steps
            step_cpu_s = p["est_pretrain_cpu_h"] * 3600 / (p["pretrain_steps"] + HEAD_COST * p.get("head_steps", 0))
            cost = HEAD_COST if kind == "pretrain_heads" else 1.0
            return cost * step_cpu_s / (threads if not p["gpus"] else 50)
        return PRIOR_S_PER_UNIT[kind]

    def estimate(self, stage: dict) -> float:
        return self.rate(stage["kind"]) * stage["units"] + RUN_OVERHEAD_S * stage.get("runs", 0)

    def eta(self, start: int) -> float:
        return sum(self.estimate(s) for s in self.stages[start:] if not s["done"]())

    def line(self, i: int, verb: str, extra: str = "") -> None:
        print(
            f"[{i + 1}/{len(self.stages)}] {verb:<5} {self.stages[i]['name']}{extra} | elapsed "
            f"{hms(time.time() - self.t0)} | ETA {hms(self.eta(i + (verb != 'start')))}",
            flush=True,
        )

    def record(self, name: str, rec: dict, drop: str = "") -> None:
        """Add a stage to timings.json as it is now on disk: another invocation in the same work dir (Base and
        Bio side by side) may have added its own stages since this one read the file. `drop`: the stage's
        unfinished attempts, now counted in `rec`."""
        on_disk = read_json(self.path, "timings") if self.path.is_file() else {}
        self.timings = {k: v for k, v in {**self.timings, **on_disk, name: rec}.items() if k != drop}
        write_json(self.path, self.timings)

    def run(self) -> None:
        for i, s in enumerate(self.stages):
            if s["done"]():
                self.line(i, "skip", ": finished before")
                continue
            self.line(i, "start")
            before = s["progress"]() if "progress" in s else 0
            t, c = time.time(), cpu_seconds()
            try:
                s["run"]()
            except BaseException:  # preempted or failed: its time so far is kept, with the units it did
                after = s["progress"]() if "progress" in s else before
                self.record(unfinished(s["name"]), self._attempt(s, t, c, after - before, unfinished(s["name"])))
                raise
            rec = self._attempt(s, t, c, s["units"] - before, unfinished(s["name"]))
            rec["finished"] = dt.datetime.now().isoformat(timespec="seconds")
            self.record(s["name"], rec, drop=unfinished(s["name"]))
            self.line(i, "done", f" in {hms(rec['wall_s'])} (CPU {hms(rec['cpu_s'])})")

    def _attempt(self, s: dict, t: float, c: float, units_done: float, earlier: str) -> dict:
        """This invocation's time on a stage, added to its earlier unfinished attempts (timings.json's
        "<name> (unfinished)"). `units_measured` is what that time covers: a stage resumed from a checkpoint
        written by an attempt that was never timed (an older version, a killed process) covers less than its
        units, and its rate is the time over the units measured."""
        on_disk = read_json(self.path, "timings") if self.path.is_file() else {}
        old = on_disk.get(earlier, {})
        return {
            "kind": s["kind"],
            "units": s["units"],
            "units_of": UNITS,
            "runs": s.get("runs", 0),
            "wall_s": old.get("wall_s", 0.0) + time.time() - t,
            "cpu_s": old.get("cpu_s", 0.0) + cpu_seconds() - c,
            "units_measured": old.get("units_measured", 0) + max(0, units_done),
            "attempts": old.get("attempts", 0) + 1,
        }
