"""The model card (README.md) of a fine-tuned export: what the model is, how it was made, how well it scores.

Every export gets one when it is written (run_task's exporter), with what is known then: the base model and
its pre-training, the task and data, the hyper-parameters, the step. The scores do not exist yet at a save;
run_task.run rewrites the card of run_dir/hf once the final devel and test scores are computed. The YAML
header is the Hugging Face Hub's model-card metadata (language, library_name, pipeline_tag, tags).
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from biobert.checkpoint import read_provenance, rewrite_export_file
from biobert.config import read_json
from biobert.errors import UserError

PIPELINES = {
    "BertForTokenClassification": "token-classification",
    "BertForSequenceClassification": "text-classification",
    "BertForQuestionAnswering": "question-answering",
}
KIND_TAGS = {"ner": "named-entity-recognition", "re": "relation-extraction", "qa": "question-answering"}
COMMAND_FLAGS = ("train_split", "eval_split", "test_split", "max_seq_length", "doc_stride", "seed")


def write_model_card(hf_dir: str | Path, run_config: dict, results: dict | None = None) -> Path | None:
    """(Re)write hf_dir/README.md from the run config, the export's own files and `results` (run_task's
    results.json, None before the scores exist). Returns its path, or None when hf_dir holds no export."""
    hf_dir = Path(hf_dir)
    if not (hf_dir / "config.json").is_file():
        return None
    text = render_model_card(run_config, read_provenance(hf_dir), read_json(hf_dir / "config.json"), results)
    return rewrite_export_file(hf_dir, "README.md", text)


def render_model_card(run_config: dict, provenance: dict, model_config: dict, results: dict | None) -> str:
    run = run_config.get("run") or {}
    task = _task(run.get("task", ""))
    kind = getattr(task, "kind", "")
    architectures = model_config.get("architectures") or []
    pipeline_tag = next((PIPELINES[a] for a in architectures if a in PIPELINES), "")
    id2label = model_config.get("id2label") or {}
    labels = [id2label[k] for k in sorted(id2label, key=int)] if pipeline_tag != "question-answering" else []
    tags = ["biobert", "bert", "biomedical", KIND_TAGS.get(kind, ""), run.get("task", "")]
    header = ["---", "language: en", "library_name: transformers"]
    header += [f"pipeline_tag: {pipeline_tag}"] if pipeline_tag else []
    header += ["tags:", *(f"- {json.dumps(t)}" for t in dict.fromkeys(tags) if t), "---", ""]
    title = f"# {run.get('task', 'BERT')} fine-tuned BERT ({_dataset(task)})"
    body = [
        title,
        "",
        f"A `{', '.join(architectures) or 'BERT'}` fine-tuned with this repository's `finetune/run_task.py` on "
        f"**{_dataset(task)}** (task `{run.get('task', '?')}`, {KIND_TAGS.get(kind, kind or 'unknown')}).",
        "",
        "## Base model",
        "",
        *_base_model(run.get("init_from", "")),
        "",
        "## Training",
        "",
        *_training(run_config, provenance),
        "",
        "## Scores",
        "",
        *_scores(task, provenance, results),
        "",
        "## Usage",
        "",
        *_usage(pipeline_tag, labels, task),
        "",
        "## Reproduce",
        "",
        "```bash",
        _command(run_config),
        "```",
        "",
        "The DeepSpeed settings that ran are `ds_config` in `biobert_run.json` (beside this card), with the run "
        "config, the training state and the git commit.",
        "",
    ]
    return "\n".join(header + body)


def _task(name: str):
    from finetune.tasks.registry import get_task

    try:
        return get_task(name) if name else None
    except UserError:
        return None


def _dataset(task) -> str:
    if task is None:
        return "unknown data"
    data = getattr(task, "dataset", "bioasq")  # yes/no tasks are BioASQ's
    if hasattr(data, "folders"):  # an RE dataset: GAD and EU-ADR are folds of one corpus
        return f"{data.folders[0]}" + (f" fold {task.fold}" if getattr(task, "fold", None) else "")
    if task.kind == "qa":
        qtype = getattr(task, "qtype", "yesno")
        return "SQuAD v1.1" if data == "squad" else " ".join(x for x in ("BioASQ", task.version, qtype) if x)
    return str(data)


def _base_model(init_from: str) -> list[str]:
    lines = [f"- initialised from `{init_from}`"]
    base = read_provenance(init_from) if init_from and Path(init_from).is_dir() else {}
    run = (base.get("run_config") or {}).get("run") or {}
    state = base.get("train_state") or {}
    if not base:
        return lines + ["- no `biobert_run.json` there: a checkpoint not trained by this repository"]
    if run.get("task"):
        return lines + [f"- itself fine-tuned by this repository on `{run['task']}` ({state.get('step', '?')} steps)"]
    manifest = (base.get("run_config") or {}).get("data_manifest") or {}
    lines += [
        f"- pre-trained by this repository: {state.get('step', '?')} steps, "
        f"{state.get('samples_seen', 0):,} sequences, {state.get('tokens_seen', 0):,} tokens",
        f"- pre-training data: `{run.get('data_dir', '?')}` (sequence length {manifest.get('seq_len', '?')}, "
        f"shard config {manifest.get('config_hash', '?')}, tokenizer {manifest.get('tokenizer_hash', '?')})",
    ]
    counts = manifest.get("counts") or {}
    if counts:
        shown = (f"{k} {v:,}" if isinstance(v, int) else f"{k} {v}" for k, v in counts.items())
        lines.append("- data counts: " + ", ".join(shown))
    if run.get("init_from"):
        lines.append(f"- pre-training continued from `{run['init_from']}`")
    if base.get("git_sha"):
        lines.append(f"- pre-training commit {base['git_sha']}")
    return lines


def _training(run_config: dict, provenance: dict) -> list[str]:
    run = run_config.get("run") or {}
    ds = provenance.get("ds_config") or {}
    state = provenance.get("train_state") or {}
    optimizer = ds.get("optimizer") or {}
    scheduler = ds.get("scheduler") or {}
    length = run.get("max_steps") or f"{run.get('epochs', '?')} epochs"
    rows = [
        ("learning rate", (optimizer.get("params") or {}).get("lr", "?")),
        ("optimizer / schedule", f"{optimizer.get('type', '?')} / {scheduler.get('type', 'constant')}"),
        ("global batch (sequences)", ds.get("train_batch_size", "?")),
        ("length", f"{length} (max_steps)" if run.get("max_steps") else length),
        ("max sequence length / doc stride", f"{run.get('max_seq_length', '?')} / {run.get('doc_stride', '?')}"),
        ("training split", f"`{run.get('train_split', '?')}`"),
        ("seed", run.get("seed", "?")),
        ("steps trained (this export)", state.get("step", "?")),
        ("git commit", provenance.get("git_sha", "?")),
    ]
    lines = ["| setting | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows), ""]
    for split, data in (run_config.get("data") or {}).items():
        lines.append(f"- `{split}`: `{data.get('path', '?')}` (sha256 {data.get('sha256', '?')})")
    return lines


def _scores(task, provenance: dict, results: dict | None) -> list[str]:
    step = (provenance.get("train_state") or {}).get("step", "?")
    if not results or not results.get("scores"):
        return [
            f"Not computed at this checkpoint (step {step}): the run's final export (`run_dir/hf`) has its "
            "devel and test scores here once the run finishes (`results.json`)."
        ]
    headline = tuple(getattr(task, "headline", ()))
    lines = [f"Scores of this model (step {results.get('steps', step)}), as `results.json` of the run holds them:", ""]
    for split, scores in results["scores"].items():
        keys = [k for k in headline if k in scores] or [k for k, v in scores.items() if isinstance(v, int | float)]
        shown = ", ".join(f"{k} {scores[k]:.2f}" if isinstance(scores[k], float) else f"{k} {scores[k]}" for k in keys)
        lines.append(f"- **{split}**: {shown}")
    return lines


def _usage(pipeline_tag: str, labels: list[str], task) -> list[str]:
    if pipeline_tag == "token-classification":
        call = 'tagger = pipeline("token-classification", model="PATH", aggregation_strategy="simple")'
        example = 'tagger("Familial breast cancer is caused by BRCA1 mutations.")  # [{"entity_group": ...}]'
    elif pipeline_tag == "text-classification":
        markers = getattr(getattr(task, "dataset", None), "markers", ()) or ("@GENE$", "@DISEASE$")
        call = 'classify = pipeline("text-classification", model="PATH")'
        example = f'classify("Mutations in {markers[0]} cause {markers[-1]} .")  # [{{"label": ..., "score": ...}}]'
    elif pipeline_tag == "question-answering":
        call = 'answer = pipeline("question-answering", model="PATH")  # transformers 4.x'
        example = 'answer(question="Which gene ...?", context="...")  # {"answer": ..., "start": ..., "end": ...}'
    else:
        return ["A BERT encoder: `transformers.AutoModel.from_pretrained(PATH)`."]
    lines = ["```python", "from transformers import pipeline", "", call, example, "```"]
    if labels:
        lines += ["", "Labels: " + ", ".join(f"`{x}`" for x in labels)]
    return lines


def _command(run_config: dict) -> str:
    """The run_task.py command of this run, from its resolved config (the recipe's values made explicit)."""
    run = run_config.get("run") or {}
    args = ["python", "finetune/run_task.py"]
    for key in ("task", "data_dir", "init_from", "run_dir"):
        args += [f"--{key}", str(run.get(key, ""))]
    args += ["--max_steps", str(run["max_steps"])] if run.get("max_steps") else ["--epochs", str(run.get("epochs"))]
    for key in COMMAND_FLAGS:
        if key in run:
            args += [f"--{key}", str(run[key])]
    for override in run_config.get("deepspeed_overrides") or []:
        args += ["--ds", override]
    return shlex.join(args)
