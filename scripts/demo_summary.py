"""Print what the demo produced and where (read from the artifacts themselves)."""

import json
import sys
from pathlib import Path

out, wall = Path(sys.argv[1]), int(sys.argv[2])
manifest = json.loads((out / "shards_128" / "manifest.json").read_text())
c = manifest["counts"]
pre = json.loads((out / "pretrain" / "result.json").read_text())
evals = [json.loads(x) for x in (out / "pretrain" / "metrics.jsonl").read_text().splitlines()]
evals = [e for e in evals if e["kind"] == "eval"]
print("\n================ demo summary ================")
print(
    f"shards      {out / 'shards_128'}: {manifest['splits']['train']['examples']:,} train / "
    f"{manifest['splits']['heldout']['examples']:,} held-out sequences of {manifest['seq_len']} tokens from "
    f"{c['documents']:,} PubMed abstracts ({c['words']:,} words)"
)
print(f"pre-training {pre['step']} steps, {pre['tokens_seen']:,} tokens, {pre['tokens_per_s']:,.0f} tokens/s")
if evals:
    first, last = evals[0], evals[-1]
    print(
        f"            held-out masked-LM loss {first['heldout_mlm_loss']:.3f} (step {first['step']}) -> "
        f"{last['heldout_mlm_loss']:.3f} (step {last['step']}); accuracy {last['heldout_mlm_acc']:.3f}"
    )
print(f"export      {out / 'pretrain' / 'hf'} (AutoModel.from_pretrained loads it)")
results = out / "ncbi_disease" / "results.json"
if results.is_file():
    r = json.loads(results.read_text())
    for split, s in r["scores"].items():
        print(
            f"NER         NCBI-disease {split}: P {s['precision']:.2f}  R {s['recall']:.2f}  F1 {s['f1']:.2f} "
            f"(entity level, conlleval)"
        )
    print(f"            predictions: {out / 'ncbi_disease' / 'predictions_test.txt'}")
print(f"wall time   {wall // 60} min {wall % 60} s")
