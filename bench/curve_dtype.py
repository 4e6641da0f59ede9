"""Fine-tuning step time of the learning curve's runs in float32 and under bfloat16 autocast on this CPU,
side by side: the same run (run_task.py, NCBI-disease at 1 % of its training sentences, all-MiniLM-L6-v2, batch
32, the curve's settings), `--steps` optimizer steps each, the sides alternated round by round.

    .venv/bin/python bench/curve_dtype.py --subset runs/learning_curve/subsets/ncbi_disease/f0.01_s1
    .venv/bin/python bench/curve_dtype.py ... --full      # also one whole 100-step run per side: test F1

Each side runs in its own process with --log_every 1; a step's time is the gap between consecutive metrics
lines (the first --skip steps left out), so set-up and scoring are not in it. bfloat16 is DeepSpeed's
torch_autocast (fp32 master weights, bf16 matmuls: finetune.json's GPU advice), which the CPU runs through
oneDNN when it has AVX-512 BF16 or AMX. Run it on an otherwise idle machine. Writes
bench/results/curve_dtype.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench")]

SIDES = {
    "float32": [],
    "bf16_autocast": ["--ds", "torch_autocast.enabled=true", "--ds", "torch_autocast.dtype=bfloat16"],
}


def one_run(subset: str, model: str, side: str, steps: int | None, out: Path, threads: int) -> dict:
    run_dir = out / side
    cmd = [sys.executable, str(REPO / "finetune" / "run_task.py"), "--task", "ncbi_disease", "--data_dir", subset]
    cmd += ["--init_from", model, "--run_dir", str(run_dir), "--progress", "false", "--eval_split", ""]
    cmd += ["--export_hf", "false", "--seed", "1", "--epochs", "50", *SIDES[side]]
    cmd += ["--log_every", "1", *(["--max_steps", str(steps)] if steps else [])]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    times = [x["time"] for x in lines if x.get("kind") == "train"]
    result = json.loads((run_dir / "results.json").read_text()) if (run_dir / "results.json").is_file() else {}
    return {"step_times": [b - a for a, b in zip(times, times[1:])], "test": result.get("scores", {}).get("test")}


def main(argv: list[str] | None = None) -> dict:
    from learning_curve import cpu_has_bf16, default_base_model

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--subset", required=True, help="a dataset folder in NCBI-disease's layout (the curve's 1 %%)")
    p.add_argument("--model", default="", help="default: all-MiniLM-L6-v2 (installed)")
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--skip", type=int, default=3, help="first steps left out of the timing")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--full", action="store_true", help="also one whole run per side (100 steps, test F1)")
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "curve_dtype.json"))
    a = p.parse_args(argv)
    model = a.model or default_base_model()
    per_side: dict[str, list[float]] = {s: [] for s in SIDES}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.rounds):
            for side in SIDES if r % 2 == 0 else reversed(list(SIDES)):
                got = one_run(a.subset, model, side, a.steps, Path(tmp) / f"r{r}", a.threads)
                per_side[side] += got["step_times"][a.skip :]
                print(f"round {r + 1} {side}: {statistics.median(got['step_times'][a.skip :]):.3f} s/step", flush=True)
        full = {}
        for side in SIDES if a.full else ():
            full[side] = one_run(a.subset, model, side, None, Path(tmp) / "full", a.threads)["test"]
    med = {s: statistics.median(v) for s, v in per_side.items()}
    data = {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "what": "run_task.py step time, NCBI-disease subset, all-MiniLM-L6-v2, batch 32, median over steps",
        "subset": a.subset,
        "threads": a.threads,
        "cpu_has_bf16": cpu_has_bf16(),
        "rounds": a.rounds,
        "steps_timed_per_side": {s: len(v) for s, v in per_side.items()},
        "median_step_s": med,
        "speedup_bf16": med["float32"] / med["bf16_autocast"],
        "full_run_test": full,
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(data, indent=1) + "\n")
    print(json.dumps({k: data[k] for k in ("median_step_s", "speedup_bf16", "full_run_test")}, indent=1))
    return data


if __name__ == "__main__":
    main()
