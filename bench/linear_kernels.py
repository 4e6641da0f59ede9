"""Why annotate.py runs float32 linear layers on oneDNN: aten's linear vs oneDNN on a packed weight, for a
model's own linear shapes, on this CPU; and what packing costs in memory.

    .venv/bin/python bench/linear_kernels.py --model runs/ncbi_disease/hf --threads 2

For every distinct (out, in) shape of the model's linear layers and every row count of --rows (a batch of 16
windows of ~32 pieces is ~512 rows), both kernels run alternately in blocks of --repeat calls, --blocks times
(so a shared machine's load falls on both); the median block gives ms per call and GFLOP/s. With the GELU
fused (`gelu` rows): oneDNN's linear+GELU against aten's linear then GELU. Then the model is loaded as
annotate loads it and packed (finetune/packed_linear.py), with the process' RSS before and after, and its
logits on random windows compared (max |difference|, argmax agreement).

Writes bench/results/linear_kernels.json (--out).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _rss_mb() -> float:
    return round(next(int(x.split()[1]) for x in open("/proc/self/status") if x.startswith("VmRSS:")) / 1024, 1)


def _median_ms(fns: dict, repeat: int, blocks: int) -> dict[str, float]:
    for f in fns.values():
        f()
        f()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(blocks):
        for name, f in fns.items():
            t0 = time.perf_counter()
            for _ in range(repeat):
                f()
            times[name].append((time.perf_counter() - t0) / repeat * 1e3)
    return {k: round(statistics.median(v), 4) for k, v in times.items()}


def _aten(x, weight, bias, act: str):
    import torch.nn.functional as F

    y = F.linear(x, weight, bias)
    return F.gelu(y) if act == "gelu" else y


def _onednn(x, packed, bias, act: str):
    import torch

    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, act, [], "none" if act == "gelu" else "")


def gemms(shapes: list[tuple[int, int]], rows: list[int], repeat: int, blocks: int) -> list[dict]:
    import torch

    from finetune.packed_linear import PACK_HINT

    out = []
    for n_out, n_in in shapes:
        weight, bias = torch.randn(n_out, n_in), torch.randn(n_out)
        packed = torch.ops.mkldnn._reorder_linear_weight(weight, PACK_HINT)
        for m in rows:
            x = torch.randn(m, n_in)
            for act in ("none", "gelu"):
                fns = {"aten": partial(_aten, x, weight, bias, act), "onednn": partial(_onednn, x, packed, bias, act)}
                ms = _median_ms(fns, repeat, blocks)
                flop = 2 * m * n_out * n_in
                row = {"out": n_out, "in": n_in, "rows": m, "act": act, "aten_ms": ms["aten"]}
                row |= {"onednn_ms": ms["onednn"]} | {f"{k}_gflops": round(flop / v / 1e6, 1) for k, v in ms.items()}
                row["speedup"] = round(ms["aten"] / ms["onednn"], 3)
                out.append(row)
                print(json.dumps(row), flush=True)
    return out


def model_check(model_dir: str) -> dict:
    import gc

    import torch

    from finetune.inference import load_model
    from finetune.packed_linear import pack_linears

    before_load = _rss_mb()
    _, model, _, _, _ = load_model(model_dir, "cpu")
    loaded = _rss_mb()
    torch.manual_seed(0)
    ids = torch.randint(1000, model.config.vocab_size, (16, 48))
    mask = torch.ones_like(ids)
    mask[8:, 30:] = 0
    with torch.inference_mode():
        ref = model(input_ids=ids, attention_mask=mask).logits
    ran = _rss_mb()
    replaced = pack_linears(model)
    gc.collect()
    packed = _rss_mb()
    with torch.inference_mode():
        got = model(input_ids=ids, attention_mask=mask).logits
    valid = mask.bool()
    return {
        "replaced_linear_layers": replaced,
        "rss_mb": {"before_load": before_load, "loaded": loaded, "after_a_forward": ran, "packed": packed},
        "packing_rss_mb": round(packed - ran, 1),
        "max_abs_logit_difference": float((got - ref).abs().max()),
        "max_abs_logit": float(ref.abs().max()),
        "argmax_agreement": float((got.argmax(-1) == ref.argmax(-1))[valid].float().mean()),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="an NER or RE export (run_dir/hf): its linear shapes")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rows", default="64,320,640,1200,2048")
    p.add_argument("--repeat", type=int, default=20)
    p.add_argument("--blocks", type=int, default=5)
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "linear_kernels.json"))
    a = p.parse_args()
    import torch
    from cpu_info import cpu_name  # bench/ is first on sys.path when run by path

    from biobert.models import load_bert_config
    from finetune.packed_linear import available

    if not available():
        sys.exit("this torch build has no oneDNN packed linear (torch.backends.mkldnn); nothing to compare")
    torch.set_num_threads(a.threads)
    config = load_bert_config(a.model)
    h, i = config.hidden_size, config.intermediate_size
    shapes = [(h, h), (i, h), (h, i)]  # q/k/v/attention output; intermediate; output
    result = {"model": a.model, "threads": a.threads, "cpu": cpu_name(), "torch": torch.__version__}
    result["model_check"] = model_check(a.model)  # first: the RSS numbers of a fresh process
    result["gemm"] = gemms(shapes, [int(x) for x in a.rows.split(",")], a.repeat, a.blocks)
    plain = [r["speedup"] for r in result["gemm"] if r["act"] == "none"]
    fused = [r["speedup"] for r in result["gemm"] if r["act"] == "gelu"]
    result["speedup_range"] = {"linear": [min(plain), max(plain)], "linear_gelu": [min(fused), max(fused)]}
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["model_check"]), json.dumps(result["speedup_range"]), f"-> {a.out}", sep="\n")


if __name__ == "__main__":
    main()
