"""The Engine: the only module that imports DeepSpeed.

Pre-training and every fine-tuning task run through this one wrapper, so precision, ZeRO, gradient
accumulation, clipping, the optimizer and scheduler all come from the DeepSpeed JSON and nowhere else.
"""

from __future__ import annotations

import os
import sys
import warnings
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch

from biobert import dist
from biobert.ds_config import finalize, load_ds_config
from biobert.errors import UserError
from biobert.models import bert_attention_mask

_NO_DECAY = ("bias", "LayerNorm.weight", "LayerNorm.bias", "layer_norm.weight", "layer_norm.bias")


def _cpu_threads() -> None:
    """The `deepspeed` launcher leaves OMP_NUM_THREADS unset; N ranks x all cores oversubscribe the CPU. A rank
    gets its share of the cores, and never more threads than its process already has: a caller's
    torch.set_num_threads (one of several workers in a process pool) is kept."""
    if "OMP_NUM_THREADS" in os.environ:
        return
    local = int(os.environ.get("LOCAL_WORLD_SIZE") or os.environ.get("LOCAL_SIZE") or dist.world_size())
    share = max(1, (os.cpu_count() or 1) // max(1, local))
    torch.set_num_threads(max(1, min(torch.get_num_threads(), share)))


def _cpu_malloc() -> None:
    """Opt-in, BIOBERT_MMAP_THRESHOLD=<bytes> (e.g. 1048576): glibc raises its mmap threshold each time a large
    block is freed, so after the first step activations and gradients come from the heap, which fragments and
    is not returned. A fixed threshold keeps large tensors in their own mappings: BERT-base on CPU peaks 15 %
    lower, but every step pays page faults for them, 20 % slower (bench/README.md). Off by default."""
    threshold = int(os.environ.get("BIOBERT_MMAP_THRESHOLD", 0))
    if threshold <= 0 or not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").mallopt(-3, threshold)  # M_MMAP_THRESHOLD; not glibc: nothing happens
    except (OSError, AttributeError):
        pass


def _param_groups(model: torch.nn.Module) -> list[dict]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if name.endswith(_NO_DECAY) else decay).append(p)
    groups = [{"params": decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


_DTYPES = {
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
}


def compute_dtype(config: dict) -> torch.dtype:
    """The precision the matrix products run in: DeepSpeed's bf16/fp16 (16-bit weights) or torch_autocast
    (fp32 weights and optimizer, 16-bit products)."""
    autocast = config.get("torch_autocast") or {}
    if autocast.get("enabled"):
        return _DTYPES[str(autocast.get("dtype")).replace("torch.", "")]
    if config.get("bf16", {}).get("enabled"):
        return torch.bfloat16
    return torch.float16 if config.get("fp16", {}).get("enabled") else torch.float32


class _HostCopy:
    """A device vector on its way to a pinned host buffer. `read()` waits for its copy only (recorded as a
    CUDA event), which has finished by the time the loop reads it one step later; the buffers are reused
    and read through numpy views made once, so reading them touches no device tensor."""

    def __init__(self, flat: torch.Tensor, has_norm: bool, pool: dict):
        self.has_norm = has_norm
        key = flat.numel()
        ring = pool.get(key)
        if ring is None:  # three in flight at most: the pending step, the one just launched, a spare
            cuda = flat.device.type == "cuda"
            bufs = [torch.empty(key, dtype=torch.float64, pin_memory=cuda) for _ in range(3)]
            ring = pool[key] = [(b, b.numpy()) for b in bufs]
        self._buf, self._view = ring.pop(0)
        ring.append((self._buf, self._view))
        self._buf.copy_(flat, non_blocking=True)
        self._event = None
        if flat.device.type == "cuda":
            self._event = torch.cuda.Event()
            self._event.record()

    def read(self) -> list[float]:
        if self._event is not None:
            self._event.synchronize()
        return self._view.tolist()


class Engine:
    """A DeepSpeed engine plus the facts the loop needs (world, batch layout, device, precision)."""

    def __init__(
        self,
        model: torch.nn.Module,
        ds_config_path: str | Path,
        *,
        total_steps: int,
        overrides: list[str] | None = None,
        timeout_s: int = 600,
        load_universal: bool = False,
        resume_stage: int | None = None,
        compile_mode: str = "",
        compile_backend: str = "inductor",
    ):
        dist.setup_env()
        import deepspeed  # noqa: PLC0415  (deferred: 1-2 s import, and the env must be set first)
        from deepspeed.accelerator import get_accelerator

        # DeepSpeed's ZeRO still calls these torch.distributed names; the warning is theirs, once per call.
        warnings.filterwarnings(
            "ignore", r".*(all_gather_into_tensor|reduce_scatter_tensor)` is deprecated", FutureWarning
        )
        self.on_cpu = get_accelerator().device_name() == "cpu"
        if self.on_cpu:
            import deepspeed.ops

            # The shared-memory allreduce is a C++ op JIT-built (~50 s) in every fresh process; gloo suffices.
            deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
            _cpu_threads()
            _cpu_malloc()
        self.source = str(ds_config_path)
        raw = load_ds_config(ds_config_path, overrides)
        world = dist.world_size()
        self.config = finalize(raw, world, total_steps, self.on_cpu, self.source, resume_stage)
        if load_universal:  # resuming a checkpoint written by a different number of ranks
            self.config.setdefault("checkpoint", {})["load_universal"] = True
        backend = "gloo" if self.on_cpu else "nccl"
        if world == 1:  # no peer to meet: an in-memory store, no TCP port (two runs starting at once could race)
            dist.init_single_process(backend, timedelta(seconds=timeout_s))
        deepspeed.init_distributed(dist_backend=backend, verbose=False, timeout=timedelta(seconds=timeout_s))
        self.ds, _, _, _ = deepspeed.initialize(model=model, model_parameters=_param_groups(model), config=self.config)
        self.rank, self.world_size = dist.rank(), world
        if world == 1 and not self.ds.zero_optimization():
            # Alone, DeepSpeed still flattens every gradient into one bucket, "all-reduces" it and copies it
            # back after each backward: a transient copy of all gradients and three passes over them, for
            # nothing (BERT-base on CPU: 440 MB and ~5 % of a step, bench/README.md).
            self.ds.enable_backward_allreduce = False
        self.train_batch = self.config["train_batch_size"]
        self.micro_batch = self.config["train_micro_batch_size_per_gpu"]
        self.grad_accum = self.config["gradient_accumulation_steps"]
        self.zero_stage = self.config.get("zero_optimization", {}).get("stage", 0)
        self.dtype = compute_dtype(self.config)
        self.device = self.ds.device
        if compile_mode:
            self._compile(compile_mode, compile_backend)
        self._buffers: dict = {}
        config = getattr(model, "config", None)  # a Hugging Face BERT task model: its mask goes in 4-D
        self._hf_bert = (
            (config._attn_implementation, model.dtype) if getattr(config, "model_type", None) == "bert" else None
        )
        self._scaler = getattr(self.ds, "torch_autocast_z0_gradscaler", None)
        self._skipped = torch.zeros((), dtype=torch.int64, device=self.device)
        if not (self.ds.fp16_enabled() or self.ds.bfloat16_enabled() or self.ds.zero_optimization()):
            self.ds.clip_fp32_gradients = self._clip_foreach  # see _clip_foreach

    def _compile(self, mode: str, backend: str) -> None:
        """torch.compile of the whole training module through DeepSpeed's engine.compile (the module is
        compiled in place: parameter and checkpoint names do not change)."""
        modes = ("auto", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
        if mode == "auto":  # compiled on a GPU; on a CPU the compile time (~20 s) outweighs a short run
            if self.on_cpu:
                return
            mode = "default"
        if mode not in modes:
            raise UserError(f"--compile {mode!r}: expected one of {', '.join(modes)} (or leave it empty)")
        if mode in ("reduce-overhead", "max-autotune") and self.grad_accum > 1:  # refused on a laptop too
            raise UserError(
                f"--compile {mode}: CUDA graphs with gradient accumulation "
                f"({self.grad_accum} micro-batches) give wrong gradients (pytorch#169545). Use "
                "--compile default, or one micro-batch per step (gradient_accumulation_steps 1)."
            )
        # torch.compile takes a mode only with inductor (other backends: tests, debugging) and refuses both
        kwargs = {"mode": mode} if mode != "default" and backend == "inductor" else {}
        self.ds.compile(backend=backend, compile_kwargs=kwargs)

    # ---- training -------------------------------------------------------------------------------
    @property
    def module(self) -> torch.nn.Module:
        return self.ds.module

    def to_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        return {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}

    def __call__(self, batch: dict[str, Any]) -> Any:
        batch = self.to_device(batch)
        mask = batch.get("attention_mask")
        if self._hf_bert is not None and mask is not None and mask.dim() == 2:
            batch["attention_mask"] = bert_attention_mask(mask, *self._hf_bert)
        return self.ds(**batch)

    def backward(self, loss: torch.Tensor) -> None:
        self.ds.backward(loss)

    def step(self) -> None:
        """Call after every micro-batch; DeepSpeed applies the update at the accumulation boundary."""
        if self._scaler is None or not self.ds.is_gradient_accumulation_boundary():
            self.ds.step()
            return
        before = self._scaler._scale.clone()  # the scaler's device tensor (its public get_scale() syncs)
        self.ds.step()
        self._skipped += (self._scaler._scale < before).to(self._skipped.dtype)

    def train(self, mode: bool = True) -> None:
        self.ds.train(mode)

    @property
    def lr(self) -> float:
        return float(self.ds.get_lr()[0])

    @property
    def grad_norm(self) -> float | None:
        """The last step's global gradient norm on the host (a sync: for log steps and tests)."""
        norm = self.ds.get_global_grad_norm()
        return None if norm is None else float(norm)

    def grad_norm_tensor(self) -> torch.Tensor | float | None:
        """The last step's global gradient norm as DeepSpeed holds it: a device tensor where the Engine clips
        (no optimizer wrapper) or DeepSpeed keeps one, a float where DeepSpeed has read it already."""
        return self.ds.get_global_grad_norm()

    def _clip_foreach(self) -> None:
        """DeepSpeed's clipper for unwrapped optimizers (fp32, torch_autocast) loops over the parameters,
        two kernels each plus a host read of the norm; torch's foreach clip does the same arithmetic in a
        handful of kernels and keeps the norm on the device. DeepSpeed still decides when to clip (at the
        accumulation boundary, after unscaling) and with which `gradient_clipping`."""
        params = [p for p in self.ds.module.parameters() if p.grad is not None]
        self.ds._global_grad_norm = torch.nn.utils.clip_grad_norm_(params, self.ds.gradient_clipping(), foreach=True)

    @property
    def loss_scale(self) -> float | None:
        """fp16's current loss scale (a host read: log steps only)."""
        if self.dtype != torch.float16:
            return None
        if self._scaler is not None:
            return float(self._scaler.get_scale())
        opt = self.ds.optimizer
        return float(getattr(opt, "cur_scale", getattr(opt, "loss_scale", 0.0)))

    @property
    def skipped_steps(self) -> int:
        """Optimizer steps skipped for an fp16 overflow. torch's GradScaler (fp16 torch_autocast at ZeRO 0)
        skips inside the fused optimizer, on the device, and DeepSpeed does not count it: a step whose
        scale went down was skipped, counted on the device in step()."""
        if self._scaler is not None:
            return int(self._skipped)
        return int(self.ds.skipped_steps)

    def all_reduce_sum(self, values: list[float] | torch.Tensor) -> list[float]:
        """Summed over ranks, on the host (a sync: for evaluation and log steps)."""
        t = torch.as_tensor(values, dtype=torch.float64).to(self.device)
        if self.world_size > 1:
            torch.distributed.all_reduce(t)
        return t.tolist()

    def reduce_async(
        self, host: list[float], device: torch.Tensor | None, norm: torch.Tensor | float | None
    ) -> _HostCopy:
        """`host` values and a `device` vector, concatenated (with the gradient norm after the host values
        when known), summed over ranks and copied to the host without waiting: `.read()` later."""
        parts = [torch.tensor(host, dtype=torch.float64)]
        if norm is not None:
            parts.append(
                norm.detach().to(torch.float64).reshape(1)
                if torch.is_tensor(norm)
                else torch.tensor([float(norm)], dtype=torch.float64)
            )
        if device is not None:
            parts.append(device.to(torch.float64))
        if not self.on_cpu:
            parts = [p.pin_memory().to(self.device, non_blocking=True) if p.device.type == "cpu" else p for p in parts]
        flat = torch.cat(parts)
        if self.world_size > 1:
            torch.distributed.all_reduce(flat)
        return _HostCopy(flat, norm is not None, self._buffers)

    def gather_objects(self, obj: Any) -> list[Any]:
        """Every rank's `obj`, in rank order, on every rank (for sharded evaluation)."""
        if self.world_size == 1:
            return [obj]
        out: list[Any] = [None] * self.world_size
        torch.distributed.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.world_size > 1:
            torch.distributed.barrier()

    # ---- checkpoints ----------------------------------------------------------------------------
    def save_checkpoint(self, ckpt_dir: str | Path, tag: str, client_state: dict) -> None:
        """Collective: every rank calls it (ZeRO shards optimizer state across ranks)."""
        from deepspeed.checkpoint.constants import (
            UNIVERSAL_CHECKPOINT_INFO,
            UNIVERSAL_CHECKPOINT_VERSION_KEY,
            UNIVERSAL_CHECKPOINT_VERSION_VALUE,
        )

        # Lets `ds_to_universal` convert it, for a resume on a different number of ranks.
        client_state = {
            **client_state,
            UNIVERSAL_CHECKPOINT_INFO: {UNIVERSAL_CHECKPOINT_VERSION_KEY: UNIVERSAL_CHECKPOINT_VERSION_VALUE},
        }
        if self._scaler is not None:  # DeepSpeed does not save torch's GradScaler (fp16 torch_autocast)
            client_state["grad_scaler"] = {**self._scaler.state_dict(), "skipped_steps": int(self._skipped)}
        try:
            self.ds.save_checkpoint(str(ckpt_dir), tag=tag, client_state=client_state, save_latest=False)
        except (OSError, RuntimeError) as e:
            import shutil

            free = shutil.disk_usage(ckpt_dir).free if Path(ckpt_dir).exists() else 0
            full = "The disk is full: free space or keep fewer checkpoints (--keep_last). " if free < 2**30 else ""
            raise UserError(
                f"{Path(ckpt_dir) / tag}: writing the checkpoint failed ({type(e).__name__}: "
                f"{str(e).splitlines()[0][:200]}); the disk holding it has {free / 2**30:.2f} GiB free. "
                f"{full}The previous checkpoint (`latest`) is intact: --resume continues from it."
            ) from None

    def load_checkpoint(self, ckpt_dir: str | Path, tag: str | None = None) -> dict:
        try:
            path, client = self.ds.load_checkpoint(
                str(ckpt_dir), tag=tag, load_optimizer_states=True, load_lr_scheduler_states=True
            )
        except (RuntimeError, OSError, EOFError, KeyError, ValueError) as e:
            raise UserError(
                f"{ckpt_dir}/{tag or 'latest'}: checkpoint could not be loaded ({e}); "
                "it may be incomplete or from a different model/ZeRO setup"
            ) from None
        if path is None:
            raise UserError(f"{ckpt_dir}: no loadable checkpoint (tag {tag or 'latest'})")
        scaler = client.get("grad_scaler")
        if self._scaler is not None and scaler is not None:
            self._skipped.fill_(scaler.pop("skipped_steps", 0))
            self._scaler.load_state_dict(scaler)
        return client

    def full_state_dict(self) -> dict[str, torch.Tensor] | None:
        """Full-precision weights on rank 0 (None elsewhere); collective under ZeRO-3."""
        module = self.module
        if self.zero_stage == 3:
            import deepspeed

            out = {}
            for name, p in module.named_parameters():
                with deepspeed.zero.GatheredParameters([p], modifier_rank=None):
                    if self.rank == 0:
                        out[name] = p.detach().float().cpu().clone()
            for name, b in module.named_buffers():
                if self.rank == 0:
                    out[name] = b.detach().cpu().clone()
            return out if self.rank == 0 else None
        if self.rank != 0:
            return None
        return {
            k: (v.detach().float() if v.is_floating_point() else v.detach()).cpu()
            for k, v in module.state_dict().items()
        }


def convert_to_universal(src: Path, dst: Path, timeout_s: int = 3600) -> None:
    """DeepSpeed's universal checkpoint (ZeRO partitions merged per parameter), so a run can resume on a
    different number of ranks. Rank 0 converts; the others (no process group exists yet) wait for the
    marker file on the shared filesystem."""
    import subprocess
    import sys
    import time

    marker = dst / ".complete"
    if dist.rank() == 0 and not marker.is_file():
        import shutil

        shutil.rmtree(dst, ignore_errors=True)
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "deepspeed.checkpoint.ds_to_universal",
                "--input_folder",
                str(src),
                "--output_folder",
                str(dst),
                "--num_extract_workers",
                "1",
                "--num_merge_workers",
                "1",
            ],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise UserError(
                f"{src}: converting the checkpoint for a different number of ranks failed:\n{proc.stderr[-2000:]}"
            )
        marker.write_text("ok\n")
    deadline = time.time() + timeout_s
    while not marker.is_file():
        if time.time() > deadline:
            raise UserError(f"{dst}: rank 0 did not finish the universal checkpoint within {timeout_s} s")
        time.sleep(1)
