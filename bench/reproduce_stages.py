"""bench/reproduce.py's stages, as Progress runs them: data_prep and pre-training as child processes (the
launcher, one process per rank) by the one skip / resume / restart policy, and each task x model's fine-tuning
protocol in this process."""

from __future__ import annotations

import json
import math
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import reproduce_mlm
from reproduce_plan import GPU_WARMUP

from biobert import checkpoint
from biobert.config import build_config, read_json, write_json
from biobert.dist import free_port
from biobert.errors import UserError
from data_prep.readers import expand_inputs

REPO = Path(__file__).resolve().parents[1]
DIST_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def child_env(threads: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in DIST_VARS}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("OMP_NUM_THREADS", str(max(1, threads)))  # one rank per core share unless the user chose
    return env


def run_child(cmd: list[str], threads: int, what: str, ok: tuple[int, ...] = (0,)) -> None:
    print("  $ " + shlex.join(cmd), flush=True)
    rc = subprocess.run(cmd, cwd=REPO, env=child_env(threads)).returncode
    if rc not in ok:
        raise UserError(
            f"{what} failed (exit status {rc}); its output is above. Fix the cause and run the same "
            "command again: finished stages are kept"
        )


def data_prep_stage(plan: dict) -> dict:
    shards = Path(plan["work_dir"]) / "shards"
    corpus = [*plan["pubmed"], *plan.get("pmc", [])]
    cmd = [
        sys.executable,
        "-m",
        "data_prep",
        "--input",
        *corpus,
        "--vocab",
        plan["base_model"],
        "--out",
        str(shards),
        "--seq_len",
        str(plan["seq_len"]),
        "--mode",
        "mlm",
    ]
    if plan["decontaminate"]:
        cmd += ["--decontaminate", *plan["decontaminate"], "--decontaminate_action", "drop"]
    cmd += [*(["--max_docs", str(plan["max_docs"])] if plan["max_docs"] else []), *shlex.split(plan["prep_args"])]
    done = (shards / "manifest.json").is_file
    # the bytes data_prep will read, listed by data_prep itself (its readers decide which files count)
    size = 0 if done() else sum(f.stat().st_size for f in expand_inputs(corpus))
    return {
        "name": "data_prep",
        "kind": "data_prep",
        "units": size,
        "done": done,
        "run": lambda: run_child(cmd, os.cpu_count() or 1, "data_prep", ok=(0, 3)),
    }  # 3: a file skipped


def pretrained(steps: int):
    """A pre-training run's "finished" test for the run policy: its result.json says `steps` steps."""

    def done(run_dir: Path) -> bool:
        return (run_dir / "result.json").is_file() and read_json(run_dir / "result.json")["step"] == steps

    return done


def checkpointed_step(run_dir: Path) -> int:
    """The step of a pre-training run's latest checkpoint (0 before its first): what a resumed run starts at."""
    tag = checkpoint.latest_tag(run_dir)
    return int(tag.removeprefix("step_")) if tag and tag.removeprefix("step_").isdigit() else 0


def pretrain_stages(plan: dict) -> list[dict]:
    work = Path(plan["work_dir"])
    run_dir, heads_dir, base_json = work / "pretrain", work / "pretrain_heads", work / "base_heldout.json"
    head_steps, steps = plan.get("head_steps", 0), plan["pretrain_steps"]
    stages = [
        {
            "name": "base_heldout",
            "kind": "base_heldout",
            "units": 1,
            "done": base_json.is_file,
            "run": lambda: write_json(base_json, reproduce_mlm.heldout_at_start(plan)),
        }
    ]
    if head_steps:
        stages.append(
            {
                "name": "pretrain_heads",
                "kind": "pretrain_heads",
                "units": head_steps,
                "done": lambda: checkpoint.run_done(heads_dir, pretrained(head_steps)),
                "progress": lambda: checkpointed_step(heads_dir),
                "run": lambda: launch_pretrain(
                    plan,
                    heads_dir,
                    plan["base_model"],
                    head_steps,
                    max(1, math.ceil(head_steps / 4)),
                    {"train_only_heads": True},
                    ["--ds", f"optimizer.params.lr={plan['head_lr']}"],
                ),
            }
        )
    init = str(heads_dir / "hf") if head_steps else plan["base_model"]
    stages.append(
        {
            "name": "pretrain",
            "kind": "pretrain",
            "units": steps,
            "done": lambda: checkpoint.run_done(run_dir, pretrained(steps)),
            "progress": lambda: checkpointed_step(run_dir),
            "run": lambda: launch_pretrain(plan, run_dir, init, steps, plan["eval_every"]),
        }
    )
    return stages


def launch_pretrain(
    plan: dict,
    run_dir: Path,
    init_from: str,
    steps: int,
    every: int,
    settings: dict | None = None,
    last_flags: tuple[str, ...] | list[str] = (),
) -> None:
    """pretrain/run.py under the chosen launcher, evaluating and saving every `every` steps, by the one skip /
    resume / restart policy (checkpoint.run_or_resume, with the stage's own "finished" test). Pre-training
    runs on several ranks, one process each, so unlike the other stages it is started as a launcher process;
    its run config goes to it as a written JSON file (--config; `settings` add to it). `last_flags` come after
    --pretrain_args, so they win over the user's (the heads-only phase's own learning rate)."""
    from pretrain.pretrain_config import PretrainConfig

    state = checkpoint.run_or_resume(run_dir, done=pretrained(steps))
    if state == "done":
        print(f"  {run_dir}: finished before; not re-run", flush=True)
        return
    if state == "resume":
        print(f"  {run_dir}: checkpoint found; continuing it with --resume", flush=True)
    elif state == "restart":
        print(f"  {run_dir}: stopped before its first checkpoint; starting it again", flush=True)
    config = {
        "data_dir": str(Path(plan["work_dir"]) / "shards"),
        "init_from": init_from,
        "run_dir": str(run_dir),
        "max_steps": steps,
        "eval_every": every,
        "save_every": every,
        "keep_last": 2,
        "eval_batches": plan["eval_batches"],
        "seq_len": plan["seq_len"],
        "log_every": max(1, every // 5),
        "resume": state == "resume",
        **(settings or {}),
    }
    build_config(PretrainConfig, config, file_source="reproduce.py's pre-training config")  # a typo fails here
    config_path = run_dir / "launch_config.json"
    write_json(config_path, config)
    port, n = str(free_port()), str(plan["nproc"])
    launch = (
        [shutil.which("deepspeed") or "deepspeed", "--num_gpus", n, "--master_port", port]
        if plan["launcher"] == "deepspeed"
        else [shutil.which("torchrun") or "torchrun", "--nproc_per_node", n, "--master_port", port]
    )
    ds = [*plan.get("ds_overrides", [])]
    if plan.get("device") == "cuda":
        ds.append(f"scheduler.params.warmup_num_steps={max(1, math.ceil(GPU_WARMUP * steps))}")
    script = [
        str(REPO / "pretrain" / "run.py"),
        "--deepspeed_config",
        plan["ds_pretrain"],
        "--config",
        str(config_path),
        *[x for o in ds for x in ("--ds", o)],
    ]
    run_child(
        [*launch, *script, *shlex.split(plan["pretrain_args"]), *last_flags],
        max(1, (os.cpu_count() or 1) // plan["nproc"]) if not plan["gpus"] else 1,
        "pre-training",
    )


def protocol_config(plan: dict, g: dict):
    """The finetune.protocol config of one task x model: the reproduction's run_task defaults, then the user's
    --ft_args (a later flag wins), parsed once into the job every sub-run starts from."""
    from finetune import protocol, run_task

    flags = shlex.split(plan["ft_args"])
    protocol.check_run_task_flags(flags, "reproduce.py")
    run_dir = str(Path(g["run_dir"]))
    init_from = plan["base_model"] if g["model"] == "base" else plan["bio_model"]
    first = f"{g['task']}_{g['folds'][0]}" if g["folds"] else g["task"]
    job = run_task.job_from_args(
        ["--deepspeed_config", plan["ds_finetune"], "--progress", "false", "--log_every", "100", *flags]
        + ["--task", first, "--data_dir", g["data_dir"], "--init_from", init_from, "--run_dir", run_dir]
    )
    fixed = plan["protocol"] == "biobert-code" or g["kind"] == "qa"  # the paper protocol picks epochs from its grid
    return protocol.ProtocolConfig(
        task=g["task"],
        run_dir=run_dir,
        job=job,
        protocol=plan["protocol"],
        seeds=list(plan["seeds"]),
        epochs=plan["epochs"][g["kind"]] if fixed else None,
        folds=list(g["folds"]),  # empty: all of the dataset's
        keep_checkpoints=plan["keep_checkpoints"],  # scored runs keep their results and predictions
    )


def finetune_stage(plan: dict, g: dict) -> dict:
    run_dir = Path(g["run_dir"])
    cfg = protocol_config(plan, g)  # bad --ft_args fail now, before any stage runs

    def complete(path: Path) -> bool:
        """The protocol's results.json holds all seeds (and folds) of this plan."""
        data = json.loads((path / "results.json").read_text()) if (path / "results.json").is_file() else {}
        return data.get("seeds") == plan["seeds"] and data.get("folds_run", g["folds"]) == g["folds"]

    def run() -> None:
        import torch

        from finetune import protocol

        if not torch.distributed.is_initialized():  # one process: no rendezvous left over from the shell
            for name in DIST_VARS:
                os.environ.pop(name, None)
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        threads = torch.get_num_threads()
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1))  # as child_env
        try:
            protocol.run(cfg)
        finally:
            torch.set_num_threads(threads)

    runs = len(plan["seeds"]) * max(1, len(g["folds"]))
    return {
        "name": f"{g['kind']} {g['task']} {g['model']} ({runs} runs)",
        "kind": g["kind"],
        "units": g["units"],
        "runs": runs,
        "done": lambda: checkpoint.run_done(run_dir, complete),
        "run": run,
    }
