"""oneDNN linear layers on pre-packed weights, for float32 inference on CPU (annotate.py's default there).

Why: on CPU most of a BERT forward pass is its linear layers, and aten's linear calls MKL's sgemm on the weight
as stored. oneDNN on a weight re-laid out once for its kernels (what inductor's weight freezing does, without
compiling anything) ran MiniLM's shapes 1.16x faster per call (median) on an AMD EPYC with AVX-512, 1.28x with
the intermediate layer's GELU fused into its GEMM (bench/linear_kernels.py); annotating PubMed went from 2.62x
to 3.13x transformers' pipeline (bench/annotate_speed.py). No warm-up, no compiler; the packed weight replaces
the original.

The results are float32 with another summation order, so probabilities differ from aten's in the last bits
(about 1e-6 relative); annotate.py records the choice in its run identity, so a resume never mixes kernels,
and `--linear torch` gives aten's arithmetic exactly. Only for inference: the packed weights take no gradient
and leave the model's state_dict.
"""

from __future__ import annotations

import torch

PACK_HINT = 512  # rows per GEMM the weight is laid out for: a batch of 16 windows of ~32 pieces; any size runs


class PackedLinear(torch.nn.Module):
    """`act(x @ W.T + b)` by oneDNN on a weight packed once; `act` is "none" or "gelu" (exact, erf)."""

    def __init__(self, linear: torch.nn.Linear, act: str = "none"):
        super().__init__()
        self.in_features, self.out_features, self.act = linear.in_features, linear.out_features, act
        self.packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), PACK_HINT)
        self.bias = None if linear.bias is None else linear.bias.detach().clone()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        algorithm = "none" if self.act == "gelu" else ""  # the GELU's approximation: none = erf
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, self.act, [], algorithm)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, act={self.act}, oneDNN packed"


def available() -> bool:
    """Whether this torch build has oneDNN's packed linear (x86 and most ARM builds do)."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        probe = PackedLinear(torch.nn.Linear(8, 4))
        return tuple(probe(torch.ones(2, 8)).shape) == (2, 4)
    except (RuntimeError, AttributeError):  # the op is not registered in this build
        return False


def _exact_gelu(module) -> bool:
    from transformers.activations import GELUActivation

    act = getattr(module, "intermediate_act_fn", None)
    return isinstance(act, GELUActivation) and act.act is torch.nn.functional.gelu


@torch.no_grad()
def pack_linears(model: torch.nn.Module) -> int:
    """Replace every float32 CPU nn.Linear of `model` (in eval mode) by a PackedLinear, fusing a BERT
    intermediate layer's exact GELU into its GEMM; returns how many were replaced (0: unchanged)."""
    if model.training:
        raise ValueError("pack_linears is for inference: call model.eval() first")
    if not available():
        return 0
    replaced = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if not isinstance(child, torch.nn.Linear):
                continue
            if child.weight.device.type != "cpu" or child.weight.dtype != torch.float32:
                continue
            act = "none"
            if name == "dense" and _exact_gelu(module):  # BertIntermediate: gelu(dense(x))
                act = "gelu"
                module.intermediate_act_fn = torch.nn.Identity()
            setattr(module, name, PackedLinear(child, act))
            replaced += 1
    return replaced
