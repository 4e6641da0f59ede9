"""NER and RE prediction on raw documents for predict.py: encode as training does, run, decode to JSON rows.

NER: each document is split into sentences (biobert.corpus.sentences), each sentence into words the way
BERT's pre-tokenizer splits them (whitespace and punctuation), each word labelled by its first sub-token,
long sentences in overlapping windows with every word predicted by exactly one (finetune.tasks.ner).
Entities are chunked by conlleval's rules and reported as character spans into the document's text.
RE: one anonymised sentence per document, encoded and truncated as in training (finetune.tasks.relation).
"""

from __future__ import annotations

from collections import Counter

from biobert.errors import UserError
from finetune.inference import run_model
from finetune.inputs import sentence_spans

# -------------------------------------------------------------------------------------------------- NER


def _softmax(scores):
    import numpy as np

    z = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def entity_spans(
    words: list[tuple[str, tuple[int, int]]], labels: list[str], probs: list[float], offset: int, default_type: str
) -> list[dict]:
    """Chunks of one sentence by conlleval's rules, as character spans shifted by `offset`."""
    from finetune.conlleval import end_of_chunk, split_tag, start_of_chunk

    spans, current = [], None
    prev = ("O", "")
    for w, label in enumerate([*labels, "O"]):  # a final O closes an open chunk
        tag = split_tag(label)
        starts = start_of_chunk(prev[0], tag[0], prev[1], tag[1]) and tag[0] not in ("O", ".")
        if current is not None and (starts or end_of_chunk(prev[0], tag[0], prev[1], tag[1])):
            spans.append(current)
            current = None
        if starts:
            current = {"first": w, "type": tag[1]}
        if current is not None:
            current["last"] = w
        prev = tag
    out = []
    for s in spans:
        start, end = words[s["first"]][1][0] + offset, words[s["last"]][1][1] + offset
        score = sum(probs[s["first"] : s["last"] + 1]) / (s["last"] + 1 - s["first"])
        out.append({"start": start, "end": end, "label": s["type"] or default_type, "score": round(score, 4)})
    return out


def predict_ner(
    docs: list[tuple[str, str]], model, tokenizer, labels: list[str], args, default_type: str, stats: Counter
) -> list[dict]:
    from finetune.tasks.base import token_outputs
    from finetune.tasks.ner import Sentence, collate_ner, encode_ner

    class _Task:  # the two TaskSpec methods run_model needs, without a TaskSpec's data files
        collate = staticmethod(collate_ner)
        outputs = staticmethod(token_outputs)

    sentences, where = [], []  # where[k] = (doc index, char offset of the sentence, its words with offsets)
    for d, (_, text) in enumerate(docs):
        for begin, end in sentence_spans(text):
            piece = text[begin:end]
            words = tokenizer.backend.pre_tokenizer.pre_tokenize_str(piece)
            if words:
                sentences.append(Sentence([w for w, _ in words], ["O"] * len(words), 0, "input"))
                where.append((d, begin, words))
    features, enc_stats = encode_ner(
        sentences, tokenizer, {x: i for i, x in enumerate(labels)}, args.max_seq_length, args.doc_stride
    )
    stats.update({k: enc_stats[k] for k in ("sentences", "split_sentences", "words", "unk_words", "cut_words")})
    logits = run_model(model, _Task, features, tokenizer.pad_id, args.batch_size)
    predicted = [[("O", 0.0)] * len(s.words) for s in sentences]
    for feature, scores in zip(features, logits):  # each word from its owning window's first piece
        probs = _softmax(scores)
        best = probs.argmax(axis=-1)
        for pos, w in enumerate(feature.word_index):
            if w >= 0:
                predicted[feature.sentence_index][w] = (labels[best[pos]], float(probs[pos, best[pos]]))
    out = [{"id": doc_id, "text": text, "entities": []} for doc_id, text in docs]
    for (d, begin, words), pred in zip(where, predicted):
        for span in entity_spans(words, [x for x, _ in pred], [p for _, p in pred], begin, default_type):
            text = docs[d][1]
            out[d]["entities"].append(
                {
                    "start": span["start"],
                    "end": span["end"],
                    "text": text[span["start"] : span["end"]],
                    "label": span["label"],
                    "score": span["score"],
                }
            )
    return out


# --------------------------------------------------------------------------------------------------- RE


def predict_re(
    docs: list[tuple[str, str]], model, tokenizer, labels: list[str], args, markers: tuple, stats: Counter
) -> list[dict]:
    from finetune.tasks.relation import RelationExample, collate_relations, encode_relations

    class _Task:
        collate = staticmethod(collate_relations)

        @staticmethod
        def outputs(model_output, batch):
            return list(model_output.logits.float().cpu().numpy())

    source = "<stdin>" if args.input == "-" else args.input  # named in encode_relations' truncation note
    examples = [RelationExample(text, labels[0], 0, doc_id, source) for doc_id, text in docs]
    features, enc_stats = encode_relations(
        examples, tokenizer, {x: i for i, x in enumerate(labels)}, args.max_seq_length, markers
    )
    stats.update({k: enc_stats[k] for k in ("examples", "truncated", "truncated_lost_marker")})
    out = []
    for (doc_id, text), scores in zip(docs, run_model(model, _Task, features, tokenizer.pad_id, args.batch_size)):
        p = _softmax(scores)
        out.append(
            {
                "id": doc_id,
                "text": text,
                "label": labels[int(p.argmax())],
                "probabilities": {x: round(float(v), 4) for x, v in zip(labels, p)},
            }
        )
    return out


def task_facts(provenance: dict) -> tuple[str, tuple]:
    """(entity type of untyped B/I labels, RE entity markers) of the task the model was fine-tuned on
    (biobert_run.json), from its TaskSpec; a model of an unknown task gets its task name (or ENTITY) and no
    markers."""
    from finetune.tasks.registry import get_task

    name = ((provenance.get("run_config") or {}).get("run") or {}).get("task", "")
    try:
        task = get_task(name) if name else None
    except UserError:
        task = None
    if task is not None and task.kind == "ner":
        return task.entity_type, ()
    if task is not None and task.kind == "re":
        return name, tuple(task.dataset.markers)
    return name or "ENTITY", ()
