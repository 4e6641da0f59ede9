"""The models of an annotation run: NER models that share one vocabulary, an optional RE model, and the entity
types each NER model provides and the RE model needs.

Entity types. A typed NER export (`B-Disease`, `I-Chemical`) gives its types; an untyped one (`B`, `I`, `O`, as
BioBERT's corpora are) gets the type of the corpus it was fine-tuned on (biobert_run.json's task, via
predict_tasks.task_facts, from the TaskSpec): NCBI-disease -> Disease, BC5CDR-chem -> Chemical, BC2GM ->
Gene/Protein, ... An RE model needs the two entity classes its TaskSpec names (ChemProt: chemical and gene;
GAD, EU-ADR: gene and disease); a type counts for a class by
its lower-cased name (`protein`, `DNA` and `RNA` count as gene, JNLPBA's types).
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass, field
from pathlib import Path

from biobert.errors import UserError
from finetune.inference import load_model, resolve_device
from finetune.predict_tasks import task_facts

TYPE_CLASSES = {  # lower-cased entity type -> the class RE tasks name it by
    "disease": "disease",
    "chemical": "chemical",
    "drug": "chemical",
    "gene": "gene",
    "protein": "gene",
    "dna": "gene",
    "rna": "gene",
    "gene/protein": "gene",
}


@dataclass(frozen=True)
class ReRoles:
    """How a candidate pair is anonymised for the RE model, as in its training data (finetune.tasks.relation)."""

    head: tuple[str, str]  # (entity class, marker replacing the head mention)
    tail: tuple[str, str]
    other: str | None = None  # marker for the other mentions of either class in the sentence (ChemProt)

    @property
    def classes(self) -> tuple[str, str]:
        return self.head[0], self.tail[0]


def re_roles(task_name: str) -> ReRoles | None:
    """How the RE task `task_name` anonymises a pair (its TaskSpec's markers and entity classes); None for a
    task that is not relation extraction between two entity classes."""
    from finetune.tasks.registry import get_task

    try:
        task = get_task(task_name) if task_name else None
    except UserError:
        return None
    dataset = getattr(task, "dataset", None)
    if task is None or task.kind != "re" or not all(getattr(dataset, "classes", ())):
        return None
    (head, tail), (head_marker, tail_marker) = dataset.classes, dataset.markers
    return ReRoles((head, head_marker), (tail, tail_marker), dataset.other_marker or None)


def entity_class(entity_type: str) -> str:
    return TYPE_CLASSES.get(entity_type.lower(), entity_type.lower())


@dataclass
class LoadedModel:
    name: str  # entities' `model` field: the fine-tuning task, made unique
    path: str
    kind: str  # "ner" or "re"
    model: object
    tokenizer: object
    labels: list[str]  # as the export lists them, index = class id
    provenance: dict
    task: str
    sha256: str  # of the model directory's files, in name order: the run's identity
    tags: list[str] = field(default_factory=list)  # NER: labels with their types (`B-Disease`)
    roles: ReRoles | None = None  # RE

    @property
    def run(self) -> dict:
        return (self.provenance.get("run_config") or {}).get("run") or {}

    @property
    def entity_types(self) -> list[str]:
        return sorted({t.partition("-")[2] for t in self.tags if t != "O"})

    def entry(self) -> dict:
        """What the manifest says about the model: enough to find and reproduce it."""
        out = {"name": self.name, "path": self.path, "task": self.task, "labels": self.labels, "sha256": self.sha256}
        if self.kind == "ner":
            out["entity_types"] = self.entity_types
        else:
            out["needs"] = list(self.roles.classes)
        return out | {"provenance": self.provenance}


def typed_labels(labels: list[str], default_type: str, where: str) -> list[str]:
    """`B-X`/`I-X` as they are; bare `B`/`I`/`E`/`S` get `default_type`; anything else is refused."""
    out = []
    for label in labels:
        prefix, sep, kind = label.partition("-")
        if label == "O":
            out.append("O")
        elif prefix in ("B", "I", "E", "S") and (kind or not sep):
            out.append(f"{prefix}-{kind or default_type}")
        else:
            raise UserError(f"{where}: label {label!r} is not O or B/I/E/S[-Type]; expected a BIO/BIOES NER export")
    if "O" not in out:
        raise UserError(f"{where}: labels {labels} have no 'O'; expected a BIO/BIOES token classifier")
    return out


def dir_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    for f in sorted(p for p in path.iterdir() if p.is_file()):
        digest.update(f.name.encode() + b"\0")
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def _load(path: str, kind: str, device: str) -> LoadedModel:
    found, model, tokenizer, labels, provenance = load_model(path, device)
    if found != kind:
        flag = {"ner": "--ner", "re": "--re"}[kind]
        raise UserError(f"{flag} {path}: this is a fine-tuned {found.upper()} model; pass it with --{found}")
    if hasattr(model, "set_attn_implementation"):
        try:
            model.set_attn_implementation("sdpa")  # fused attention; the export may name "eager"
        except (ValueError, ImportError):
            pass
    task = ((provenance.get("run_config") or {}).get("run") or {}).get("task", "") or Path(path).parent.name
    m = LoadedModel(task, path, kind, model, tokenizer, labels, provenance, task, dir_sha256(Path(path)))
    if kind == "ner":
        entity_type, _ = task_facts(provenance)
        m.tags = typed_labels(labels, entity_type, path)
    else:
        m.roles = re_roles(task)
        if m.roles is None:
            raise UserError(
                f"--re {path}: fine-tuned on {task or 'an unknown task'} (biobert_run.json), which is not a "
                "relation task between two entity classes (its TaskSpec names none); annotation builds "
                "candidate pairs for ChemProt, GAD and EU-ADR models"
            )
    return m


@dataclass
class ModelSet:
    ner: list[LoadedModel]
    re: LoadedModel | None
    device: str
    missing: list[str]  # entity classes the RE model needs that no NER model provides

    @property
    def tokenizer(self):
        return self.ner[0].tokenizer

    def manifest(self) -> dict:
        return {"ner": [m.entry() for m in self.ner], "re": self.re.entry() if self.re else None}


def load_models(ner: list[str], re: str | None, device: str) -> ModelSet:
    """Load and check: one vocabulary (and casing) for all NER models, unique names, RE types available."""
    if not ner:
        raise UserError("pass at least one --ner model (run_dir/hf of an NER run); RE pairs come from its entities")
    device = resolve_device(device)
    models = [_load(p, "ner", device) for p in ner]
    first = models[0].tokenizer
    for m in models[1:]:
        if m.tokenizer.vocab_hash != first.vocab_hash:
            raise UserError(
                f"--ner {m.path} has another vocabulary than {models[0].path} (vocab hash "
                f"{m.tokenizer.vocab_hash}, lowercase={m.tokenizer.lowercase} vs {first.vocab_hash}, "
                f"lowercase={first.lowercase}): the NER models share one tokenisation of the text, so they must "
                "be fine-tuned from the same pre-trained model; annotate with each group in its own run"
            )
    seen: dict[str, int] = {}
    for m in models:
        seen[m.name] = seen.get(m.name, 0) + 1
        if seen[m.name] > 1:
            m.name = f"{m.name}#{seen[m.name]}"
    re_model = _load(re, "re", device) if re else None
    missing = []
    if re_model is not None:
        provided = {entity_class(t) for m in models for t in m.entity_types}
        missing = [c for c in re_model.roles.classes if c not in provided]
        if missing:
            print(
                f"warning: --re {re} ({re_model.task}) pairs {' and '.join(re_model.roles.classes)} entities, but "
                f"no --ner model provides {', '.join(missing)} (they provide "
                f"{', '.join(sorted(provided)) or 'nothing'}): no relations will be predicted; add an NER model "
                "of that type",
                file=sys.stderr,
                flush=True,
            )
    return ModelSet(models, re_model, device, missing)
