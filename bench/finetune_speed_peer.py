"""bench/finetune_speed.py's peer: the Hugging Face Trainer set up as transformers'
examples/pytorch/token-classification/run_ner.py does, on NCBI-disease, scored by our conlleval; and the
protocol both sides share (seed, batch, learning rate, lengths). finetune_speed.py's docstring has the method.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

SEED = 42
BATCH = 32
EVAL_BATCH = 64
LR = 5e-5
MAX_LEN = 128


def _peer_datasets(spec: dict, tokenizer, label2id: dict) -> tuple[dict, dict]:
    import datasets

    from finetune.tasks.ner import read_ner_tsv

    folder = Path(spec["data_dir"]) / "NCBI-disease"
    sentences = {s: read_ner_tsv(folder / f"{s}.tsv") for s in ("train", "devel", "test")}

    def tokenize_and_align_labels(examples):  # run_ner.py's, label_all_tokens=False, plus the word ids
        enc = tokenizer(
            examples["tokens"], padding=False, truncation=True, max_length=MAX_LEN, is_split_into_words=True
        )
        labels, words = [], []
        for i, tags in enumerate(examples["ner_tags"]):
            previous, ids, row = None, [], []
            for w in enc.word_ids(batch_index=i):
                ids.append(-100 if w is None or w == previous else tags[w])
                row.append(-1 if w is None or w == previous else w)
                previous = w
            labels.append(ids)
            words.append(row)
        enc["labels"] = labels
        enc["first_word"] = words
        return enc

    out = {}
    for name, sents in sentences.items():
        ds = datasets.Dataset.from_dict(
            {"tokens": [s.words for s in sents], "ner_tags": [[label2id[x] for x in s.labels] for s in sents]}
        )
        out[name] = ds.map(tokenize_and_align_labels, batched=True, remove_columns=["tokens", "ner_tags"])
    return out, sentences


def run_peer_ner(spec: dict) -> dict:
    import numpy as np
    import torch
    from transformers import (
        AutoTokenizer,
        BertForTokenClassification,
        DataCollatorForTokenClassification,
        Trainer,
        TrainingArguments,
        set_seed,
    )
    from transformers.utils import logging as hf_logging

    from finetune.conlleval import conlleval
    from finetune.tasks.ner import read_ner_tsv

    hf_logging.set_verbosity_error()
    torch.set_num_threads(spec["threads"])
    train_sents = read_ner_tsv(Path(spec["data_dir"]) / "NCBI-disease" / "train.tsv")
    label_list = sorted({x for s in train_sents for x in s.labels})  # run_ner's get_label_list
    label2id = {x: i for i, x in enumerate(label_list)}
    set_seed(SEED)
    tokenizer = AutoTokenizer.from_pretrained(spec["model"])
    model = BertForTokenClassification.from_pretrained(
        spec["model"],
        num_labels=len(label_list),
        id2label=dict(enumerate(label_list)),
        label2id=label2id,
        attn_implementation="sdpa",
    )
    data, sentences = _peer_datasets(spec, tokenizer, label2id)
    steps = math.ceil(len(data["train"]) / BATCH) * spec["epochs"]
    args = TrainingArguments(
        output_dir=spec["run_dir"],
        per_device_train_batch_size=BATCH,
        per_device_eval_batch_size=EVAL_BATCH,
        learning_rate=LR,
        weight_decay=0.01,
        adam_beta1=0.9,
        adam_beta2=0.999,
        adam_epsilon=1e-8,
        max_grad_norm=1.0,
        num_train_epochs=spec["epochs"],
        lr_scheduler_type="linear",
        warmup_steps=max(1, round(0.1 * steps)),
        seed=SEED,
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        disable_tqdm=True,
        logging_steps=50,
        use_cpu=True,
        dataloader_num_workers=0,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=data["train"].remove_columns(["first_word"]),
        data_collator=DataCollatorForTokenClassification(tokenizer),
        processing_class=tokenizer,
    )
    t0 = time.perf_counter()
    out = trainer.train()
    trainer.save_model()  # run_ner saves the model after training; ours checkpoints + exports in fit()
    t1 = time.perf_counter()
    scores, lost = {}, {}
    for split in ("devel", "test"):
        ds = data[split]
        logits = trainer.predict(ds.remove_columns(["first_word"])).predictions
        best = np.argmax(logits, axis=-1)
        preds, n_lost = [], 0
        for i, sent in enumerate(sentences[split]):
            row = ["O"] * len(sent.words)
            seen = set()
            for pos, w in enumerate(ds[i]["first_word"]):
                if w >= 0:
                    row[w] = label_list[int(best[i, pos])]
                    seen.add(w)
            n_lost += len(sent.words) - len(seen)
            preds.append(row)
        scores[split] = conlleval([s.labels for s in sentences[split]], preds)
        lost[split] = n_lost
    end = time.perf_counter()
    test = scores["test"]
    return {
        "train_s": t1 - t0,
        "eval_s": end - t1,
        "train_eval_s": end - t0,
        "steps": out.global_step,
        "test_f1": 100 * test["f1"],
        "test_precision": 100 * test["precision"],
        "test_recall": 100 * test["recall"],
        "devel_f1": 100 * scores["devel"]["f1"],
        "words_as_O": lost["test"],
        "devel_words_as_O": lost["devel"],
        "optim": str(args.optim),
        "train_loss": out.training_loss,
    }
