"""finetune/packed_linear.py: oneDNN linear layers on packed weights give the model's own outputs (float32, up
to the last bits), fuse BERT's exact GELU, and leave what they cannot run untouched."""

from __future__ import annotations

import pytest
import torch

from finetune.packed_linear import PackedLinear, available, pack_linears

pytestmark = pytest.mark.skipif(not available(), reason="this torch build has no oneDNN packed linear")


def _tiny(tiny_assets, **kw):
    from transformers import BertForTokenClassification

    torch.manual_seed(0)
    model = BertForTokenClassification.from_pretrained(str(tiny_assets["model"]), num_labels=5, **kw)
    return model.eval()


def test_packed_model_gives_the_models_logits(tiny_assets):
    model = _tiny(tiny_assets)
    ids = torch.randint(5, model.config.vocab_size, (3, 17))
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0  # a padded row: the mask path too
    with torch.inference_mode():
        before = model(input_ids=ids, attention_mask=mask).logits
    layers = model.config.num_hidden_layers
    assert pack_linears(model) == 6 * layers + 1  # q, k, v, attention output, intermediate, output; classifier
    packed = [m for m in model.modules() if isinstance(m, PackedLinear)]
    assert not any(isinstance(m, torch.nn.Linear) for m in model.modules())
    assert sum(m.act == "gelu" for m in packed) == layers  # the intermediate GELU runs inside its GEMM
    layers_acts = [layer.intermediate.intermediate_act_fn for layer in model.bert.encoder.layer]
    assert all(isinstance(act, torch.nn.Identity) for act in layers_acts)
    with torch.inference_mode():
        after = model(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)
    assert torch.equal(after.argmax(-1), before.argmax(-1))


def test_what_cannot_be_packed_is_left_alone(tiny_assets):
    model = _tiny(tiny_assets)
    with pytest.raises(ValueError, match="eval"):
        pack_linears(model.train())
    model.eval().to(torch.bfloat16)  # bf16 runs under autocast on torch's kernels
    assert pack_linears(model) == 0
    assert sum(isinstance(m, torch.nn.Linear) for m in model.modules()) == 6 * model.config.num_hidden_layers + 1


def test_a_tanh_gelu_is_not_fused(tiny_assets):
    model = _tiny(tiny_assets, hidden_act="gelu_new")  # tanh approximation: oneDNN's erf GELU would change it
    ids = torch.randint(5, model.config.vocab_size, (2, 11))
    with torch.inference_mode():
        before = model(input_ids=ids).logits
    pack_linears(model)
    assert all(m.act == "none" for m in model.modules() if isinstance(m, PackedLinear))
    with torch.inference_mode():
        torch.testing.assert_close(model(input_ids=ids).logits, before, rtol=1e-4, atol=1e-5)
