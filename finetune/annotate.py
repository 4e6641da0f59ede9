"""Annotate a corpus with fine-tuned NER (and RE) models: entities and relations for every document, to Parquet.

    python -m finetune.annotate --input pubmed/baseline pubmed/updatefiles \\
        --ner runs/ncbi/hf runs/bc5cdr_chem/hf runs/bc2gm/hf --re runs/chemprot/hf --out annotations/

Inputs are whatever data_prep reads (PubMed XML with update-file supersession, PMC .nxml / packages, text, JSON
lines), through its readers and sentence splitter; each input unit (a file, or a group of PMC articles)
becomes `<out>/<unit>.parquet`, one row per document (finetune/annotate_output.py holds the schema, the
layout and the manifest). The NER models share one tokenisation of the text (they must share the
vocabulary); entities of every model are kept with their type and model, overlapping or not. With --re,
each pair of mentions of the classes the RE model was trained on, within one sentence, is anonymised as in
its training data and classified. docs/annotate.md is the user's guide.

Resume: a unit is finished when its Parquet file has been renamed into place and then its done marker
written; a rerun (after kill -9, a preemption, a failed array task) skips finished units and redoes the
others from scratch, byte for byte the same. --part i/N annotates units k with k mod N == i (Slurm arrays:
slurm/annotate.sbatch); the last part to finish writes manifest.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

if __package__ in (None, ""):  # run by path: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from biobert.errors import UserError, exit_on_user_error  # noqa: E402
from biobert.faults import NO_FAULTS, Faults  # noqa: E402


@dataclass
class AnnotateConfig:
    inputs: list[str]
    ner: list[str]
    out: str
    re: str | None = None
    part: str | None = None  # "i/N": this Slurm array task's share of the units
    device: str = "auto"
    dtype: str = "auto"  # bfloat16 on CUDA, float32 on CPU; bfloat16 on a CPU with native bf16 is ~2x faster
    compile: bool = False  # torch.compile the models (inductor, frozen weights): ~20% faster on CPU after a warm-up
    # auto: oneDNN on pre-packed weights for float32 on CPU (finetune/packed_linear.py), else torch's; torch: aten's
    linear: str = "auto"
    # windows per forward pass; 0: 16 on CPU (as fast as 64 there and smaller: bench/annotate_speed.py), 128 on CUDA
    batch_size: int = 0
    chunk_docs: int = 256  # documents read, annotated and written at a time (one Parquet row group)
    max_seq_length: int | None = None  # default: the NER models' fine-tuning value (the smallest), else 128
    doc_stride: int | None = None
    keep_title_only: bool = False  # PubMed records without an abstract are skipped (and counted) by default
    max_docs: int | None = None  # per unit: the first N documents only (a quick look; part of the run's identity)
    threads: int | None = None  # torch intra-op threads (default: torch's)
    overwrite: bool = False

    def validate(self) -> None:
        if self.linear not in ("auto", "torch"):
            raise UserError(f"--linear {self.linear!r}: choose auto or torch")
        for name in ("batch_size", "chunk_docs", "max_docs"):
            if getattr(self, name) is not None and getattr(self, name) < (0 if name == "batch_size" else 1):
                raise UserError(f"--{name} {getattr(self, name)}: must be at least 1")


def compile_models(models) -> None:
    """torch.compile every model with inductor, weights frozen as constants (oneDNN-packed on CPU), shapes
    dynamic (batches differ in length); compilation happens on the first batches."""
    import torch
    import torch._inductor.config as inductor_config

    inductor_config.freezing = True
    for m in [*models.ner, *([models.re] if models.re else [])]:
        m.model = torch.compile(m.model, dynamic=True)


def pack_models(models, settings) -> str:
    """--linear auto: oneDNN linear layers on packed weights for float32 eager on CPU; returns the kernels used
    ("onednn" or "torch"), part of the run's identity (probabilities differ in their last bits)."""
    from finetune.packed_linear import pack_linears

    if models.device != "cpu" or settings.dtype != "float32":
        return "torch"
    packed = [pack_linears(m.model) for m in [*models.ner, *([models.re] if models.re else [])]]
    return "onednn" if all(packed) else "torch"


def _settings(cfg: AnnotateConfig, models):
    from finetune.annotate_core import Settings, resolve_dtype

    runs = [m.run for m in models.ner]
    max_len = cfg.max_seq_length or min(r.get("max_seq_length") or 128 for r in runs)
    stride = cfg.doc_stride if cfg.doc_stride is not None else min(r.get("doc_stride", 32) for r in runs)
    stride = min(stride, max(0, max_len - 3))  # a smaller --max_seq_length than the models': keep windows moving
    re_len = (models.re.run.get("max_seq_length") or 128) if models.re else 128
    batch = cfg.batch_size or (128 if models.device.startswith("cuda") else 16)
    return Settings(max_len, stride, batch, re_len, resolve_dtype(cfg.dtype, models.device))


def _identity(cfg: AnnotateConfig, models, settings, units, linear: str = "torch") -> dict:
    options = asdict(settings) | {"keep_title_only": cfg.keep_title_only, "chunk_docs": cfg.chunk_docs}
    if cfg.compile:  # compiled kernels may round a probability differently: a resume keeps the choice
        options["compile"] = True
    if linear != "torch":  # so do oneDNN's; absent for aten's, the kernels of runs from before the option
        options["linear"] = linear
    if cfg.max_docs is not None:  # absent otherwise: runs from before the option keep their identity
        options["max_docs"] = cfg.max_docs
    models_id = [m.sha256 for m in models.ner] + [models.re.sha256 if models.re else None]
    return {
        "format": "biobert-annotations",
        "options_hash": hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()[:16],
        "models_hash": hashlib.sha256(json.dumps(models_id).encode()).hexdigest()[:16],
        "inputs_hash": hashlib.sha256(json.dumps([u.name for u in units]).encode()).hexdigest()[:16],
    }


def run(cfg: AnnotateConfig, faults: Faults = NO_FAULTS) -> dict:
    """Annotate (this part of) the units into `cfg.out`; returns the part's manifest (written last)."""
    import torch

    from data_prep.outdir import part_manifest_name
    from data_prep.readers import expand_inputs
    from data_prep.shards import write_json_atomic
    from data_prep.supersede import build_index, order_files
    from data_prep.units import check_pubmed_names, parse_part, plan_units
    from finetune import annotate_output as output
    from finetune.annotate_models import load_models
    from finetune.annotate_unit import annotate_unit, unit_input

    cfg.validate()
    part = parse_part(cfg.part)
    units = plan_units(expand_inputs(cfg.inputs))
    check_pubmed_names(units)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    models = load_models(cfg.ner, cfg.re, cfg.device)
    settings = _settings(cfg, models)
    linear = "torch"
    if cfg.compile:  # inductor packs the weights itself, and fuses more
        compile_models(models)
    elif cfg.linear == "auto":
        linear = pack_models(models, settings)
    identity = _identity(cfg, models, settings, units, linear)
    mine = [u for u in units if part is None or u.position % part[1] == part[0]]
    out = Path(cfg.out)
    output.claim(out, identity, cfg.overwrite, [u.name for u in mine] if part else None)
    pubmed = order_files(u.path for u in units if u.pubmed)
    index = build_index(out, pubmed) if pubmed else None
    for n, unit in enumerate(mine, start=1):
        expect = identity | {"input": unit_input(unit), "index_hash": index.hash if index and unit.pubmed else None}
        if output.is_current(out, output.read_marker(out, unit.name), expect):
            print(f"[kept] {unit.label}: finished by an earlier run", file=sys.stderr, flush=True)
            continue
        marker = annotate_unit(unit, models, settings, cfg, out, index, faults) | expect
        output.write_marker(out, unit.name, marker)
        c = marker["counts"]
        print(
            f"[{n}/{len(mine)}] {unit.label}: {c['documents']:,} docs, {c['entities']:,} entities, "
            f"{c['relations']:,} relations, {marker['seconds']:.1f}s"
            + (f"; ERROR {marker['error']}" if marker["error"] else ""),
            file=sys.stderr,
            flush=True,
        )
    head = {
        "format": identity["format"],
        "format_version": output.FORMAT_VERSION,
        "identity": identity,
        "settings": asdict(settings)
        | {"keep_title_only": cfg.keep_title_only, "chunk_docs": cfg.chunk_docs, "max_docs": cfg.max_docs}
        | {"compile": cfg.compile, "linear": linear},
        "models": models.manifest(),
        "warnings": _warnings(models),
        "supersession": {k: index.info[k] for k in ("hash", "articles", "deletions", "drop_superseded", "drop_deleted")}
        if index
        else None,
    }
    markers = [output.read_marker(out, u.name) for u in mine]
    manifest = output.assemble(head, markers)
    if part:
        manifest["part"] = {"index": part[0], "count": part[1], "units": [u.name for u in mine]}
        write_json_atomic(out / part_manifest_name(*part), manifest | {"peak_rss_mb": _rss()})
    everything = [output.read_marker(out, u.name) for u in units]
    if all(output.is_current(out, m, identity) for m in everything):
        complete = output.assemble(head, everything) | {"complete": True}
        write_json_atomic(out / output.MANIFEST, complete)  # the same from any part: markers only
        manifest = complete if not part else manifest
    return manifest


def _warnings(models) -> list[str]:
    if not models.missing:
        return []
    return [
        f"RE model {models.re.name} pairs {' and '.join(models.re.roles.classes)} entities; no NER model provides "
        f"{', '.join(models.missing)}: no relations predicted (counts.documents_without_re_entity_types)"
    ]


def _rss() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def parse_args(argv: list[str] | None) -> AnnotateConfig:
    d = AnnotateConfig(inputs=[], ner=[], out="")
    p = argparse.ArgumentParser(
        prog="python -m finetune.annotate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--input", nargs="+", required=True, metavar="PATH", help="files, directories or glob patterns")
    p.add_argument("--ner", nargs="+", required=True, metavar="MODEL", help="fine-tuned NER exports (run_dir/hf)")
    p.add_argument("--re", default=None, metavar="MODEL", help="a fine-tuned RE export (chemprot, gad_N, euadr_N)")
    p.add_argument("--out", required=True, help="output directory (Parquet per unit, done/, manifest.json)")
    p.add_argument("--part", metavar="I/N", default=None, help="units k with k mod N == I (a Slurm array task)")
    p.add_argument("--device", default=d.device, help="auto (CUDA when available, bf16), cpu, cuda, cuda:1, ...")
    p.add_argument(
        "--dtype",
        default=d.dtype,
        choices=("auto", "float32", "bfloat16"),
        help="auto: bfloat16 on CUDA, float32 on CPU (exactly evaluation's entities); bfloat16 on a CPU with "
        "native bf16 (AVX512-BF16, AMX) is about 2x faster and changes a few entities (bench/README.md)",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the models (inductor with frozen weights): about 20%% faster on CPU after a warm-up "
        "of about half a minute; the same entities",
    )
    p.add_argument(
        "--linear",
        default=d.linear,
        choices=("auto", "torch"),
        help="auto: float32 on CPU runs its linear layers by oneDNN on weights packed once (about 10%% faster, "
        "probabilities equal to torch's but for their last bits); torch: torch's own kernels",
    )
    p.add_argument(
        "--batch_size", type=int, default=d.batch_size, help="windows per forward pass (0: 16 on CPU, 128 on CUDA)"
    )
    p.add_argument("--chunk_docs", type=int, default=d.chunk_docs, help="documents in memory at a time")
    p.add_argument("--max_seq_length", type=int, default=None, help="default: the NER models' (smallest), else 128")
    p.add_argument("--doc_stride", type=int, default=None, help="window overlap; default: the NER models', else 32")
    p.add_argument("--keep_title_only", action="store_true", help="also annotate records without an abstract")
    p.add_argument(
        "--max_docs", type=int, default=None, help="annotate only the first N documents of each unit (a quick look)"
    )
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--overwrite", action="store_true", help="replace an output directory of another run")
    a = p.parse_args(argv)
    return AnnotateConfig(
        inputs=a.input,
        ner=a.ner,
        out=a.out,
        re=a.re,
        part=a.part,
        device=a.device,
        dtype=a.dtype,
        compile=a.compile,
        linear=a.linear,
        batch_size=a.batch_size,
        chunk_docs=a.chunk_docs,
        max_seq_length=a.max_seq_length,
        doc_stride=a.doc_stride,
        keep_title_only=a.keep_title_only,
        max_docs=a.max_docs,
        threads=a.threads,
        overwrite=a.overwrite,
    )


@exit_on_user_error
def main(argv: list[str] | None = None) -> dict:
    cfg = parse_args(argv)
    manifest = run(cfg, Faults.from_env())  # test hooks, read once
    c = manifest["counts"]
    print(
        f"annotate: {c.get('documents', 0):,} documents, {c.get('entities', 0):,} entities, "
        f"{c.get('relations', 0):,} relations -> {cfg.out}"
        + (f"; skipped {manifest['skipped']}" if manifest["skipped"] else ""),
        file=sys.stderr,
        flush=True,
    )
    return manifest


if __name__ == "__main__":
    main()
