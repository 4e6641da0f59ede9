#!/usr/bin/env bash
# A/B of one DeepSpeed setting on one GPU, interleaved (A, B, A, B, ...) so drift hits both sides:
# BERT-base pre-training on the default path (ds_configs/h100x8.json) at BioBERT's per-GPU batches (seq 128 x 128,
# seq 512 x 32).
#
#   bash bench/gpu_ab.sh                                      # zero_optimization.stage 0 vs 1
#   KEY=gradient_clipping A=1.0 B=0 ROUNDS=2 bash bench/gpu_ab.sh
#
# Extra arguments go to every bench/gpu_pretrain.py call (e.g. --ds overrides).
# Writes bench/results/gpu_<device>_ab_<key>.json (every round, and per configuration the mean tokens/s of
# each side and the B/A ratio). About 70 s per round on an H200.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
KEY=${KEY:-zero_optimization.stage} A=${A:-0} B=${B:-1} ROUNDS=${ROUNDS:-2}
export TOKENIZERS_PARALLELISM=false TQDM_DISABLE=1
tmp=$(mktemp -d)
for i in $(seq 1 "$ROUNDS"); do
  for v in "$A" "$B"; do
    echo "== round $i: $KEY=$v"
    timeout 150 "$PY" bench/gpu_pretrain.py --mb128 128 --mb512 32 --variants new --config_s 12 \
      --warmup 10 --budget_s 200 --ds "$KEY=$v" --out "$tmp/round_${i}_$v.json" "$@" | tail -3
  done
done
"$PY" - "$tmp" "$KEY" "$A" "$B" <<'PYEOF'
import glob, json, re, statistics, sys
from pathlib import Path
tmp, key, a, b = sys.argv[1:]
rounds = []
for f in sorted(glob.glob(f"{tmp}/round_*.json")):
    d = json.loads(Path(f).read_text())
    i, v = re.match(r".*round_(\d+)_(.*)\.json", f).groups()
    rounds.append({"round": int(i), "value": v, "device": d["device"], "date": d["date"], "results": [
        {k: r.get(k) for k in ("tokens_per_s", "s_per_step", "mfu")} | {"seq_len": r["spec"]["seq_len"],
         "micro_batch": r["spec"]["micro_batch"]} for r in d["results"]]})
summary = {}
for seq, mb in sorted({(r["seq_len"], r["micro_batch"]) for x in rounds for r in x["results"]}):
    side = {v: [r["tokens_per_s"] for x in rounds if x["value"] == v for r in x["results"]
                if (r["seq_len"], r["micro_batch"]) == (seq, mb) and r["tokens_per_s"]] for v in (a, b)}
    means = {v: statistics.mean(t) if t else None for v, t in side.items()}
    summary[f"seq{seq}_mb{mb}"] = {f"{key}={v}": {"tokens_per_s": side[v], "mean": means[v]} for v in (a, b)} | {
        "ratio_b_over_a": round(means[b] / means[a], 3) if means[a] and means[b] else None}
device = rounds[0]["device"]["name"].replace(" ", "_")
out = Path(f"bench/results/gpu_{device}_ab_{key.replace('.', '_')}.json")
out.write_text(json.dumps({"key": key, "a": a, "b": b, "rounds": rounds, "summary": summary}, indent=2) + "\n")
for name, s in summary.items():
    print(f"{name}: {key}={a} {s[f'{key}={a}']['mean']:,.0f} tokens/s, ={b} {s[f'{key}={b}']['mean']:,.0f}, "
          f"ratio {s['ratio_b_over_a']}")
print(f"wrote {out}")
PYEOF
