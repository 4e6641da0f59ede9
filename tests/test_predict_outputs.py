"""run_task's evaluation batches by length: same outputs, in input order, on one rank or split over two."""

from __future__ import annotations

import random

import numpy as np
import torch
from transformers import BertConfig, BertForTokenClassification

from finetune.tasks.base import predict_outputs, token_outputs
from finetune.tasks.ner import Feature, collate_ner


class _Task:
    collate = staticmethod(collate_ner)
    outputs = staticmethod(token_outputs)


class _Engine:
    """Rank `rank` of `world`; records each batch's padded width and real lengths."""

    def __init__(self, model, world: int = 1, rank: int = 0):
        self.model, self.world_size, self.rank, self.batches = model, world, rank, []

    def __call__(self, batch):
        self.batches.append((batch["input_ids"].shape[1], batch["attention_mask"].sum(1).tolist()))
        return self.model(**batch)

    def gather_objects(self, obj):
        return [obj]


def _setup(n: int = 37):
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, num_labels=3
    )
    model = BertForTokenClassification(config).eval()
    rng = random.Random(1)
    features = []
    for i in range(n):
        length = rng.choice([3, 4, 5, 40, 41, 90])
        ids = [rng.randrange(5, 50) for _ in range(length)]
        features.append(Feature(ids, [0] * length, i, list(range(length))))
    return model, features


def _alone(model, feature) -> np.ndarray:
    batch = collate_ner([feature], 0)
    batch.pop("labels")
    with torch.no_grad():
        return token_outputs(model(**batch), batch)[0]


def test_outputs_in_input_order_and_batches_by_length():
    model, features = _setup()
    engine = _Engine(model)
    outputs = predict_outputs(engine, _Task(), features, pad_id=0, batch_size=8)
    assert len(outputs) == len(features)
    for feature, out in zip(features, outputs, strict=True):
        assert out.shape == (len(feature.input_ids), 3)
        np.testing.assert_allclose(out, _alone(model, feature), atol=1e-5)
    # each batch pads to its own longest sentence: short sentences never wait on a 90-token one
    assert [w for w, _ in engine.batches] == sorted(w for w, _ in engine.batches)
    for width, lengths in engine.batches:
        assert width == max(lengths)
        assert max(lengths) - min(lengths) <= 50
    assert sum(w * len(lengths) for w, lengths in engine.batches) < sum(len(f.input_ids) for f in features) * 1.3


def test_two_ranks_cover_every_feature_once_in_order():
    model, features = _setup(n=21)
    parts = [predict_outputs(_Engine(model, 2, rank), _Task(), features, 0, 4) for rank in (0, 1)]
    assert [len(p) for p in parts] == [11, 10]
    for feature, out in zip(features, parts[0] + parts[1], strict=True):
        np.testing.assert_allclose(out, _alone(model, feature), atol=1e-5)
