"""Model FLOPs per token and accelerator peaks, for model-FLOPs utilisation (MFU).

MFU counts only the model's own FLOPs (6 per parameter per token for forward + backward, plus attention's
score and value products), not recomputation or padding, so it is comparable across implementations.
"""

from __future__ import annotations

import torch

# Dense peak TFLOP/s per device (no sparsity), by name fragment, for 16-bit and for fp32 (TF32 where used).
_PEAKS = [  # (fragment of torch.cuda.get_device_name, bf16/fp16 peak, fp32 peak)
    ("H200", 989.0, 494.0),
    ("H100 PCIe", 756.0, 378.0),
    ("H100", 989.0, 494.0),
    ("A100", 312.0, 156.0),
    ("L40S", 362.0, 183.0),
    ("A10G", 70.0, 35.0),
    ("A10", 125.0, 62.5),
    ("L4", 121.0, 60.0),
    ("V100", 125.0, 15.7),
    ("T4", 65.0, 8.1),
]


def device_peak_tflops(device: torch.device | str, dtype: torch.dtype) -> float:
    """0.0 when unknown (CPUs, unlisted GPUs): pass --peak_tflops to get MFU there."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return 0.0
    name = torch.cuda.get_device_name(device)
    for fragment, half, single in _PEAKS:
        if fragment in name:
            return half if dtype in (torch.float16, torch.bfloat16) else single
    return 0.0


def bert_flops_per_token(config, seq_len: int, mlm_fraction: float = 1.0) -> float:
    """Training FLOPs per token of a BERT: 6 x (encoder + pooler parameters) + attention products, plus
    the vocabulary projection for the fraction of positions that compute it (0.15 with masked-only)."""
    h, layers, inter, vocab = config.hidden_size, config.num_hidden_layers, config.intermediate_size, config.vocab_size
    per_layer = 4 * h * h + 2 * h * inter  # q, k, v, output projections + the two feed-forward matrices
    encoder = layers * per_layer
    attention = layers * 2 * seq_len * h  # QK^T and attention x V, per token
    head = h * h + mlm_fraction * h * vocab  # MLM transform + decoder
    return 6.0 * (encoder + attention + head)
