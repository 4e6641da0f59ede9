"""Annotate a chunk of documents: one tokenisation for every NER model, entities as character spans, then
relations between entities of one sentence.

NER is encoded exactly as evaluation encodes it (finetune.tasks.ner.encode_ner: words as BERT's pre-tokenizer
splits them, each labelled by its first sub-token, long sentences in overlapping windows with each word owned
by one), so annotating a test set's text gives the entities run_task.py scored. The windows of a chunk are
sorted by length and batched (inference.length_batches); each batch is padded once and run through every NER
model. Only the best label id and its probability leave the device. Chunking follows conlleval
(predict_tasks.entity_spans).

RE: for each sentence, every pair (head class, tail class) of non-overlapping mentions, the sentence text with
the pair replaced by the RE task's markers (and, for ChemProt, the other mentions of either class by
BC6OTHER), encoded and truncated as in training (finetune.tasks.relation.encode_relations).
"""

from __future__ import annotations

import contextlib
from collections import Counter
from dataclasses import dataclass

import numpy as np

from biobert.errors import UserError
from finetune.annotate_models import LoadedModel, ModelSet, entity_class
from finetune.inference import length_batches
from finetune.predict_tasks import entity_spans


@dataclass
class Doc:
    id: str
    text: str
    sentences: list[tuple[int, int]]  # character spans of its sentences in `text`


@dataclass(frozen=True)
class Settings:
    max_seq_length: int
    doc_stride: int
    batch_size: int
    re_max_seq_length: int = 128
    dtype: str = "float32"  # "bfloat16": autocast (CUDA; CPUs with native bf16), "float32": exactly as evaluation


def resolve_dtype(dtype: str, device: str) -> str:
    """`--dtype auto`: bfloat16 on CUDA, float32 on CPU (entities exactly as evaluation scores them)."""
    if dtype not in ("auto", "float32", "bfloat16"):
        raise UserError(f"--dtype {dtype!r}: choose auto, float32 or bfloat16")
    if dtype == "auto":
        return "bfloat16" if device.startswith("cuda") else "float32"
    return dtype


def _autocast(device: str, dtype: str):
    import torch

    if dtype == "bfloat16":
        return torch.autocast("cuda" if device.startswith("cuda") else "cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _run(models: list[LoadedModel], rows: list[list[int]], pad_id: int, cfg: Settings, device: str, token: bool):
    """Per model, per row: (best class ids, their probabilities) per position (token) or per row (sequence)."""
    import torch

    from finetune.tasks.base import pad_rows

    out = [[None] * len(rows) for _ in models]
    with torch.inference_mode(), _autocast(device, cfg.dtype):
        for ix in length_batches([len(r) for r in rows], cfg.batch_size):
            ids, mask = pad_rows([rows[i] for i in ix], pad_id)
            batch = {"input_ids": ids.to(device), "attention_mask": mask.to(device)}
            batch["token_type_ids"] = torch.zeros_like(batch["input_ids"])
            for k, m in enumerate(models):
                probs = m.model(**batch).logits.float().softmax(-1)
                if token:
                    score, best = probs.max(-1)
                    score, best = score.cpu().numpy(), best.cpu().numpy()
                    for j, i in enumerate(ix):
                        out[k][i] = (best[j, : len(rows[i])], score[j, : len(rows[i])])
                else:
                    probs = probs.cpu().numpy()
                    for j, i in enumerate(ix):
                        out[k][i] = probs[j]
    return out


def _words(docs: list[Doc], tokenizer) -> tuple[list, list]:
    from finetune.tasks.ner import Sentence

    sentences, where = [], []  # where[k] = (doc index, sentence index, char offset, words with offsets)
    pre = tokenizer.backend.pre_tokenizer
    for d, doc in enumerate(docs):
        for s, (begin, end) in enumerate(doc.sentences):
            words = pre.pre_tokenize_str(doc.text[begin:end])
            if words:
                sentences.append(Sentence([w for w, _ in words], ["O"] * len(words), 0, doc.id))
                where.append((d, s, begin, words))
    return sentences, where


def ner_entities(docs: list[Doc], models: ModelSet, cfg: Settings, stats: Counter) -> list[list[dict]]:
    """Entities per document, sorted by (start, end, type, model); each has its sentence index `_sentence`."""
    from finetune.tasks.ner import encode_ner

    tok = models.tokenizer
    sentences, where = _words(docs, tok)
    features, enc = encode_ner(sentences, tok, {"O": 0}, cfg.max_seq_length, cfg.doc_stride)
    for k in ("sentences", "split_sentences", "words", "unk_words", "cut_words"):
        stats[k] += enc[k]
    results = _run(models.ner, [f.input_ids for f in features], tok.pad_id, cfg, models.device, True)
    out: list[list[dict]] = [[] for _ in docs]
    for m, per_feature in zip(models.ner, results):
        best = [np.zeros(len(s.words), np.int64) for s in sentences]
        score = [np.zeros(len(s.words), np.float32) for s in sentences]
        for f, (ids, probs) in zip(features, per_feature):
            wi = np.asarray(f.word_index)
            own = wi >= 0
            best[f.sentence_index][wi[own]] = ids[own]
            score[f.sentence_index][wi[own]] = probs[own]
        tags, outside = m.tags, m.tags.index("O")
        for (d, s, begin, words), b, p in zip(where, best, score):
            if (b == outside).all():  # most sentences: no entity, no chunking
                continue
            labels = [tags[i] for i in b.tolist()]
            for span in entity_spans(words, labels, p.tolist(), begin, ""):
                text = docs[d].text
                out[d].append(
                    {
                        "start": span["start"],
                        "end": span["end"],
                        "text": text[span["start"] : span["end"]],
                        "type": span["label"],
                        "score": span["score"],
                        "model": m.name,
                        "_sentence": s,
                    }
                )
    for ents in out:
        ents.sort(key=lambda e: (e["start"], e["end"], e["type"], e["model"]))
    return out


def _anonymise(text: str, span: tuple[int, int], replace: list[tuple[int, int, str]]) -> str:
    """`text[span[0]:span[1]]` with each (start, end, marker) (document offsets, disjoint) replaced."""
    parts, cursor = [], span[0]
    for start, end, marker in sorted(replace):
        parts += [text[cursor:start], marker]
        cursor = end
    return "".join(parts) + text[cursor : span[1]]


def _overlaps(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def candidate_pairs(doc: Doc, entities: list[dict], m: LoadedModel) -> list[tuple[int, int, str]]:
    """(head entity index, tail entity index, anonymised sentence) of every pair in one sentence of `doc`.

    A mention found by several models (same span, same class) is one mention: the first entity listing it.
    """
    roles = m.roles
    mentions: dict[tuple[int, int, int, str], int] = {}  # (sentence, start, end, class) -> entity index
    for i, e in enumerate(entities):
        mentions.setdefault((e["_sentence"], e["start"], e["end"], entity_class(e["type"])), i)
    by_sentence: dict[int, list[tuple[int, int, str, int]]] = {}
    for (s, start, end, cls), i in mentions.items():
        if cls in roles.classes:
            by_sentence.setdefault(s, []).append((start, end, cls, i))
    pairs = []
    for s, ms in sorted(by_sentence.items()):
        for h in (x for x in ms if x[2] == roles.head[0]):
            for t in (x for x in ms if x[2] == roles.tail[0]):
                if _overlaps(h[:2], t[:2]):
                    continue
                replace = [(h[0], h[1], roles.head[1]), (t[0], t[1], roles.tail[1])]
                if roles.other:
                    for o in sorted(ms):
                        if all(not _overlaps(o[:2], r[:2]) for r in replace):
                            replace.append((o[0], o[1], roles.other))
                pairs.append((h[3], t[3], _anonymise(doc.text, doc.sentences[s], replace)))
    return pairs


def relations(docs: list[Doc], entities: list[list[dict]], models: ModelSet, cfg: Settings, stats: Counter):
    """Relations per document: head/tail entity indices, label, score (its probability), probabilities."""
    from finetune.tasks.relation import RelationExample, encode_relations

    m = models.re
    out: list[list[dict]] = [[] for _ in docs]
    if m is None:
        return out
    if models.missing:
        stats["documents_without_re_entity_types"] += len(docs)
        return out
    pairs = [(d, h, t, text) for d, doc in enumerate(docs) for h, t, text in candidate_pairs(doc, entities[d], m)]
    stats["candidate_pairs"] += len(pairs)
    if not pairs:
        return out
    examples = [RelationExample(text, m.labels[0], 0, str(k), "annotate") for k, (_, _, _, text) in enumerate(pairs)]
    label2id = {x: i for i, x in enumerate(m.labels)}
    markers = (m.roles.head[1], m.roles.tail[1])
    features, enc = encode_relations(examples, m.tokenizer, label2id, cfg.re_max_seq_length, markers)
    stats["truncated_pairs"] += enc["truncated"]
    stats["truncated_pairs_lost_marker"] += enc["truncated_lost_marker"]
    (probs,) = _run([m], [f.input_ids for f in features], m.tokenizer.pad_id, cfg, models.device, False)
    for (d, h, t, _), p in zip(pairs, probs):
        best = int(p.argmax())
        out[d].append(
            {
                "head": h,
                "tail": t,
                "label": m.labels[best],
                "score": round(float(p[best]), 4),
                "probabilities": [{"label": x, "p": round(float(v), 4)} for x, v in zip(m.labels, p)],
            }
        )
    return out


def annotate_docs(docs: list[Doc], models: ModelSet, cfg: Settings, stats: Counter) -> list[dict]:
    """One output row per document: id, text, entities, relations."""
    entities = ner_entities(docs, models, cfg, stats)
    rels = relations(docs, entities, models, cfg, stats)
    rows = []
    for doc, ents, rs in zip(docs, entities, rels):
        for e in ents:
            del e["_sentence"]
        rows.append({"id": doc.id, "text": doc.text, "entities": ents, "relations": rs})
        stats["entities"] += len(ents)
        stats["relations"] += len(rs)
    return rows
