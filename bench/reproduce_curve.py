"""bench/reproduce.py's learning-curve mode (--learning_curve, --device cuda): the CurveConfig of a reproduction,
the Bios of a curve shared by several pre-training budgets (--curve_dir), and the curve's plan and estimate
printed beside the reproduction's."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

import learning_curve
import learning_curve_gpu
import learning_curve_plan

from biobert.config import read_json

REPO = Path(__file__).resolve().parents[1]


def curve_config(a: argparse.Namespace) -> learning_curve.CurveConfig:
    """The learning curve of this reproduction: its Base, its Bio export, its data root; the curve's own
    defaults (seeds, fractions, epochs) unless --seeds / --curve_datasets are given."""
    d, cuda = learning_curve.CurveConfig(), "_cuda" if a.device == "cuda" else ""
    return learning_curve.CurveConfig(
        base_model=str(Path(a.base_model or learning_curve.default_base_model()).resolve()),
        bio_model=str(a.work_dir / "pretrain" / "hf"),
        data_root=str(Path(a.data_root).resolve()),
        work_dir=str(Path(a.curve_dir or REPO / "runs" / f"learning_curve{cuda}").resolve()),
        report_dir=str(Path(a.report_dir).resolve()),
        datasets=tuple(x for x in a.curve_datasets.split(",") if x) if a.curve_datasets else d.datasets,
        seeds=tuple(a.seeds) if a.seeds_given else d.seeds,
        device=a.device,
        workers=a.curve_workers,
        ft_args=tuple(shlex.split(a.ft_args)),
        keep_checkpoints=a.keep_checkpoints,
    )


def budget_name(tokens: int) -> str:
    """A Bio's name in the curve, from its pre-training tokens: 2,002,944 -> bio_2.0M."""
    return f"bio_{tokens / 1e6:.1f}M" if tokens >= 100_000 else f"bio_{tokens}"


def curve_bios(cfg: learning_curve.CurveConfig, plan: dict) -> dict[str, str]:
    """The Bios of the curve's earlier plan (other budgets' reproductions) and this reproduction's, by name."""
    path = Path(cfg.work_dir) / "plan.json"
    earlier = read_json(path).get("models", {}) if path.is_file() else {}
    bios = {k: v for k, v in earlier.items() if k != "base"}
    if Path(plan["bio_model"]).resolve() not in {Path(v).resolve() for v in bios.values()}:  # hf/ is a link
        name = budget_name(plan["pretrain_tokens"])
        if name in bios:  # the same budget from another reproduction (another corpus, another Base head...)
            name = f"{name}_{Path(plan['work_dir']).name}"
        bios[name] = plan["bio_model"]
    return bios


def curve_plan(a: argparse.Namespace, cfg: learning_curve.CurveConfig, cpu_head_tokens: int) -> dict:
    """The curve's runs and CPU estimate; on --device cuda also the one-GPU plan, whose pre-training tokens (and
    a heads-only phase MIN_FACTOR x the CPU one) replace the CPU budget unless --pretrain_tokens / --head_tokens."""
    plan = learning_curve.build_plan(cfg)
    plan["estimate"] = learning_curve_plan.estimate_cpu(plan, cfg.work_dir, cfg.workers or 1)
    if cfg.device == "cuda":
        plan["gpu"] = learning_curve_gpu.gpu_plan(plan, cfg)
        a.pretrain_tokens = a.pretrain_tokens or plan["gpu"]["pretrain_tokens"]
        a.head_default = cpu_head_tokens * learning_curve_gpu.MIN_FACTOR
    return plan


def print_curve(plan: dict, curve: dict, cfg: learning_curve.CurveConfig, head_cost: float) -> None:
    learning_curve.print_plan(curve, curve["estimate"], cfg)
    if g := curve.get("gpu"):
        learning_curve_gpu.print_gpu_plan(g)
        head_s = head_cost * plan["head_tokens"] / g["speeds"]["pretrain_tokens_per_s"]
        print(
            f"  + heads-only phase of {plan['head_tokens']:,} tokens: about {head_s:.0f} s; about "
            f"{g['est_total_s'] + head_s:.0f} s in all (estimate)",
            flush=True,
        )


def report_from_results(a: argparse.Namespace, path: Path) -> dict:
    """reproduce.md when the reproduction's work dir is gone (a new machine): its pre-training part from the
    results/reproduce.json it wrote, the learning curve rewritten from the curve's runs (--curve_dir), which the
    curve's ledger restores there (bench/learning_curve.py, a Bio by its path or by sha256:)."""
    import reproduce_report

    from biobert.errors import UserError

    if not path.is_file():
        raise UserError(f"--from_results {path}: no such file; expected an earlier results/reproduce.json")
    saved = read_json(path)
    plan = saved["plan"]
    if not plan.get("learning_curve"):
        raise UserError(
            f"--from_results {path}: a reproduction without the learning curve; its report needs its work dir"
        )
    curve_dir = Path(a.curve_dir or plan["learning_curve"]["work_dir"]).resolve()
    if not (curve_dir / "plan.json").is_file():
        raise UserError(
            f"--from_results: {curve_dir / 'plan.json'} not found; run the curve there first (bench/learning_curve.py "
            "--work_dir DIR with each Bio by its path or its weights' sha256:, which restores the ledger's runs)"
        )
    plan["learning_curve"] = {**plan["learning_curve"], "work_dir": str(curve_dir)}
    return reproduce_report.write_report(plan, Path(a.report_dir), saved=saved)
