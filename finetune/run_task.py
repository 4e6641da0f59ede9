"""Fine-tune and evaluate a BERT checkpoint on one of BioBERT's tasks.

    python finetune/run_task.py --task chemprot            # BioBERT's recipe, the documented layout
    python finetune/run_task.py --task ncbi_disease --data_dir datasets/NER --init_from runs/biobert/hf \
        --run_dir runs/ncbi --epochs 10

Evaluation only (no training): `--train_split ""` with `--init_from` a checkpoint fine-tuned on the task
(e.g. runs/ncbi/hf) scores its devel and test splits the same way, and writes results.json and predictions.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run by path: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from biobert import checkpoint, dist  # noqa: E402
from biobert.config import (  # noqa: E402
    LoopConfig,
    add_config_args,
    config_dict,
    config_from_args,
    layout_path,
    read_json,
    write_json,
)
from biobert.errors import UserError, exit_on_user_error  # noqa: E402
from biobert.files import short_sha256  # noqa: E402

DEFAULT_DS = str(Path(__file__).resolve().parents[1] / "ds_configs" / "finetune.json")


@dataclasses.dataclass
class FinetuneConfig(LoopConfig):
    task: str = ""  # one of the tasks listed above
    data_dir: str = ""  # BioBERT's datasets folder (NER/, RE/, QA/ inside), or the task's own folder
    init_from: str = ""  # Hugging Face BERT directory: our export (run_dir/hf), BERT, BioBERT
    epochs: float = 3.0  # used when max_steps is 0
    max_seq_length: int = 128  # WordPieces per window, [CLS]/[SEP] (and the question) included
    doc_stride: int = 32  # overlap of windows for sentences longer than max_seq_length
    eval_batch_size: int = 64  # sequences per forward pass when scoring
    train_split: str = "train"  # "train_dev" trains on train+devel, as BioBERT's released code does; "": evaluate only
    eval_split: str = "devel"  # evaluated during training ("" to skip)
    test_split: str = "test"  # scored once at the end ("" to skip)
    eval_every: int = -1  # -1: once per epoch
    attn_implementation: str = "sdpa"
    group_by_length: bool = True  # batches of similar length: far less padding, same examples per epoch
    # the task's own knobs, e.g. {"scheme": "strict"} (NER) or {"n_best": 20, "list_threshold": 0.42} (BioASQ);
    # on the command line n_best=20,top_k=5. `--help` lists each task's; config.json records them all
    task_options: dict = dataclasses.field(default_factory=dict)


RECIPES = Path(__file__).resolve().parent / "configs"


def _description() -> str:
    from finetune.tasks.registry import get_task, task_names

    tasks = "\n".join(f"  {kind}: {', '.join(names)}" for kind, names in task_names().items())
    knobs = {}  # task_options per task family, with their defaults
    for names in task_names().values():
        for name in names:
            task = get_task(name)
            if task.options:
                knobs.setdefault(type(task).__name__, (name, {k: getattr(task, k) for k in task.options}))
    tasks += "\n\nTask options (--task_options key=value,...; each family's defaults):\n" + "\n".join(
        f"  {family} tasks (e.g. {name}): {', '.join(f'{k}={v}' for k, v in values.items())}"
        for family, (name, values) in knobs.items()
    )
    return (
        f"{__doc__}\nTasks (--task):\n{tasks}\n\nEach task runs its recipe, finetune/configs/<task>.json "
        "(BioBERT's hyper-parameters; data in datasets/ and the model in runs/biobert_phase2/hf, relative to "
        "BIOBERT_HOME or the current directory), then --config, then these flags."
    )


def parse_args(argv: list[str] | None) -> tuple[FinetuneConfig, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=_description(), formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deepspeed_config", default=DEFAULT_DS, help="DeepSpeed JSON (default: %(default)s)")
    parser.add_argument(
        "--ds",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        help="override a DeepSpeed JSON value, e.g. --ds optimizer.params.lr=3e-5",
    )
    parser.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)
    add_config_args(parser, FinetuneConfig, " (after the task's recipe, finetune/configs/<task>.json)")
    args = parser.parse_args(argv)
    task = getattr(args, "task", None) or (read_json(args.config).get("task") if args.config else None)
    if not task:
        raise UserError("--task is required (python finetune/run_task.py --help lists them)")
    from finetune.tasks.registry import get_task

    recipe = RECIPES / f"{get_task(task).recipe}.json"
    cfg = config_from_args(FinetuneConfig, args, recipe if recipe.is_file() else None)
    if cfg.run_dir == LoopConfig.run_dir:  # not chosen: runs/<task> in the layout
        cfg.run_dir = str(layout_path(f"runs/{cfg.task}"))
    for name in ("data_dir", "init_from"):
        if not getattr(cfg, name):
            raise UserError(f"--{name} is required")
    return cfg, args


@dataclasses.dataclass
class Job:
    """What `run` needs: the run config and the DeepSpeed choice (a profile and its overrides). Orchestrators
    (protocol.py, crossval.py) build one from the user's flags once, then vary it with `with_`."""

    cfg: FinetuneConfig
    deepspeed_config: str = DEFAULT_DS
    ds: list[str] = dataclasses.field(default_factory=list)

    def with_(self, ds: tuple[str, ...] | list[str] = (), **changes) -> Job:
        """A copy with config fields changed and DeepSpeed overrides appended (a later one wins)."""
        return Job(dataclasses.replace(self.cfg, **changes), self.deepspeed_config, [*self.ds, *ds])


def job_from_args(argv: list[str] | None) -> Job:
    cfg, args = parse_args(argv)
    return Job(cfg, args.deepspeed_config, list(args.ds))


def load_splits(task, cfg: FinetuneConfig, tokenizer, checkpoint_config=None) -> dict:
    from finetune.tasks.base import SplitData

    files = task.splits(Path(cfg.data_dir))
    wanted = [s for s in (cfg.train_split, cfg.eval_split, cfg.test_split) if s]
    for name in wanted:
        if name not in files:
            raise UserError(f"{cfg.data_dir}: task {task.name} has no `{name}` split (found {sorted(files)})")
    examples = {name: task.read(files[name]) for name in dict.fromkeys(wanted)}
    task.set_labels(examples)
    if checkpoint_config is not None and task.kind == "ner":
        # Evaluating a fine-tuned tagger: its own label map (which may hold labels seen only in training) is
        # kept when it covers every label of the evaluated splits; otherwise load_task_model refuses it.
        config = checkpoint_config
        if "BertForTokenClassification" in (config.architectures or []):
            theirs = [config.id2label[i] for i in sorted(config.id2label)]
            if set(task.labels) <= set(theirs):
                task.labels = theirs
    splits = {}
    for name, exs in examples.items():
        feats, stats = task.encode(exs, tokenizer, cfg.max_seq_length, cfg.doc_stride)
        splits[name] = SplitData(name, files[name], exs, feats, stats)
    return splits


def _check_fine_tuned(cfg: FinetuneConfig, model, checkpoint_config) -> None:
    """Evaluation without training needs the task's head from the checkpoint, not a freshly drawn one."""
    head = type(model).__name__
    if head not in (checkpoint_config.architectures or []):
        raise UserError(
            f'{cfg.init_from}: --train_split "" evaluates without training, but this checkpoint has '
            f"no trained {head} head (it would be scored with random weights). Pass a checkpoint "
            f"fine-tuned on {cfg.task} (a run's hf/ folder), or train with --train_split train."
        )
    if cfg.resume:
        raise UserError('--resume continues training; it cannot be combined with --train_split ""')


@exit_on_user_error
def main(argv: list[str] | None = None) -> dict:
    return run(job_from_args(argv))


@dataclasses.dataclass
class _Setup:
    """What one run is made of, resolved before the engine exists."""

    task: Any
    tokenizer: Any
    splits: dict
    task_options: dict  # every knob of the task, resolved (config.json records them)
    train: Any = None  # the training SplitData; None when evaluating only
    sampler: Any = None
    total_steps: int = 1  # evaluation only: the engine wants a schedule length; no step is taken
    checkpoint_config: Any = None  # evaluation only: the fine-tuned checkpoint's config


def _setup(job: Job) -> _Setup:
    """The task, its data encoded and the training schedule; cfg.eval_every is resolved here, before
    config.json is written, so config.json records the config that runs."""
    from biobert.ds_config import load_ds_config, resolve_batch
    from biobert.models import check_model_dir, load_bert_config
    from biobert.sampler import EpochSampler
    from biobert.tokenizer import load_tokenizer
    from finetune.tasks.base import configure
    from finetune.tasks.registry import get_task

    cfg = job.cfg
    task = get_task(cfg.task)
    options = configure(task, cfg.task_options, f"task_options of {cfg.task}")
    if not cfg.resume:
        checkpoint.check_fresh_run_dir(cfg.run_dir)
    check_model_dir(cfg.init_from)  # before its vocabulary: the message says where the model was looked for
    tokenizer = load_tokenizer(cfg.init_from)
    # evaluation only: the fine-tuned checkpoint's config decides the label map and must hold the task's head
    checkpoint_config = load_bert_config(cfg.init_from) if not cfg.train_split else None
    setup = _Setup(task, tokenizer, load_splits(task, cfg, tokenizer, checkpoint_config), options)
    setup.checkpoint_config = checkpoint_config
    dist.setup_env()
    if cfg.train_split:
        setup.train = train = setup.splits[cfg.train_split]
        ds_config = load_ds_config(job.deepspeed_config, job.ds)
        global_batch = resolve_batch(ds_config, dist.world_size(), job.deepspeed_config)[0]
        lengths = np.array([len(f.input_ids) for f in train.features]) if cfg.group_by_length else None
        setup.sampler = EpochSampler(
            len(train.features), global_batch, cfg.seed, shuffle=True, drop_last=False, lengths=lengths
        )
        setup.total_steps = cfg.max_steps or max(1, round(cfg.epochs * setup.sampler.steps_per_epoch))
        if cfg.eval_every < 0:
            cfg.eval_every = setup.sampler.steps_per_epoch
    return setup


def _run_config(job: Job, setup: _Setup, engine, model) -> dict:
    """config.json: the resolved run config, the task's knobs and labels, the data's digests and the run's
    identity (what checkpoint.check_same_run compares on --resume)."""
    from biobert.models import config_sha256

    cfg = job.cfg
    data = {n: {"path": str(s.path), "sha256": short_sha256(s.path), **s.stats} for n, s in setup.splits.items()}
    run_config = {
        "run": {**config_dict(cfg), "task_options": setup.task_options},
        "deepspeed_overrides": job.ds,
        "labels": setup.task.labels,
        "data": data,
    }
    run_config["identity"] = {
        "task": setup.task.name,
        "labels": setup.task.labels,
        "seed": cfg.seed,
        "train_batch_size": engine.train_batch,
        "model_config_sha256": config_sha256(model.config),
        "train_data_sha256": data.get(cfg.train_split, {}).get("sha256"),
    }
    return run_config


def _announce(cfg: FinetuneConfig, setup: _Setup, engine) -> None:
    if not cfg.train_split:
        print(f"{setup.task.name}: evaluating {cfg.init_from} without training", file=sys.stderr, flush=True)
        return
    print(
        f"{setup.task.name}: {len(setup.train.examples)} {cfg.train_split} sentences -> "
        f"{len(setup.train.features)} windows; batch {engine.train_batch}; {setup.sampler.steps_per_epoch} "
        f"steps/epoch; {setup.total_steps} steps",
        file=sys.stderr,
        flush=True,
    )


def _build_engine(job: Job, setup: _Setup):
    """(engine, model, resume plan or None): the task's model on the one Engine."""
    from biobert.engine import Engine

    cfg = job.cfg
    dist.seed_everything(dist.derived_seed(cfg.seed, "init"))  # the new classifier's initial weights
    model = setup.task.build_model(cfg.init_from, cfg.attn_implementation)
    if not cfg.train_split:
        _check_fine_tuned(cfg, model, setup.checkpoint_config)
    plan = (
        checkpoint.prepare_resume(cfg.run_dir, dist.world_size(), cfg.resume_from, cfg.trust_checkpoint)
        if cfg.resume
        else None
    )
    engine = Engine(
        model,
        job.deepspeed_config,
        total_steps=setup.total_steps,
        overrides=job.ds,
        compile_mode=cfg.compile,
        compile_backend=cfg.compile_backend,
        load_universal=bool(plan and plan.universal),
        resume_stage=plan.zero_stage if plan else None,
    )
    return engine, model, plan


def run(job: Job) -> dict:
    """Fine-tune (unless cfg.train_split is "") and score one task; returns what results.json holds."""
    from biobert.faults import Faults
    from biobert.loop import fit
    from biobert.sampler import BatchLayout, BatchSource
    from finetune.model_card import write_model_card
    from finetune.tasks.base import predict_outputs

    cfg = job.cfg
    setup = _setup(job)
    task, tokenizer, splits = setup.task, setup.tokenizer, setup.splits
    engine, model, plan = _build_engine(job, setup)
    run_config = _run_config(job, setup, engine, model)
    if plan is not None:
        checkpoint.check_same_run(plan, run_config["identity"])
    if engine.rank == 0:
        write_json(Path(cfg.run_dir) / "config.json", run_config)
        write_json(Path(cfg.run_dir) / "ds_config.json", engine.config)
        _announce(cfg, setup, engine)

    def evaluate_split(name: str) -> tuple[list, dict]:
        split = splits[name]
        outputs = predict_outputs(engine, task, split.features, tokenizer.pad_id, cfg.eval_batch_size)
        predictions = task.decode(split, outputs)
        return predictions, task.score(split, predictions)

    last_eval: dict = {}

    def evaluate(eng, state) -> dict:
        last_eval.update(step=state.step, result=evaluate_split(cfg.eval_split))
        return {f"{cfg.eval_split}_{k}": v for k, v in last_eval["result"][1].items()}

    def exporter(eng, out_dir, provenance):
        # label names for pipelines (an NER tagger's typed B-Disease); a card with what is known at this step
        labels = task.export_labels() if hasattr(task, "export_labels") else None
        checkpoint.export_hf_model(eng, out_dir, provenance, "", model, tokenizer, labels=labels)
        if eng.rank == 0:
            write_model_card(out_dir, provenance["run_config"])

    state = checkpoint.TrainState()
    if cfg.resume:
        client = engine.load_checkpoint(checkpoint.checkpoint_dir(cfg.run_dir), plan.tag)
        state = checkpoint.state_from_client(client, f"{cfg.run_dir}/checkpoints/{plan.tag}")
    t0 = time.time()
    if cfg.train_split:
        train = setup.train
        layout = BatchLayout(engine.train_batch, engine.micro_batch, engine.grad_accum, engine.world_size, engine.rank)
        source = BatchSource(
            setup.sampler, layout, lambda ix: task.collate([train.features[i] for i in ix], tokenizer.pad_id)
        )
        evaluator = evaluate if cfg.eval_split and cfg.eval_every else None
        state = fit(
            engine,
            source,
            state,
            cfg,
            total_steps=setup.total_steps,
            run_config=run_config,
            evaluate=evaluator,
            exporter=exporter if cfg.export_hf else None,
            faults=Faults.from_env(),
        )
    results = _results(cfg, setup, engine, state, time.time() - t0)
    engine.train(False)
    for name in (cfg.eval_split, cfg.test_split):
        if not name:
            continue
        reuse = name == cfg.eval_split and last_eval.get("step") == state.step
        predictions, scores = last_eval["result"] if reuse else evaluate_split(name)
        results["scores"][name] = scores
        if engine.rank == 0:
            task.write_predictions(Path(cfg.run_dir) / f"predictions_{name}.txt", splits[name], predictions)
    if engine.rank == 0:
        write_json(Path(cfg.run_dir) / "results.json", results)
        if cfg.train_split and cfg.export_hf:  # the final export's card, now with its scores
            write_model_card(Path(cfg.run_dir) / "hf", run_config, results)
        for name, scores in results["scores"].items():
            line = "  ".join(f"{k} {scores[k]:.2f}" for k in task.headline if k in scores)
            print(f"{task.name} {name}: {line}", flush=True)
    return results


def _results(cfg: FinetuneConfig, setup: _Setup, engine, state, train_s: float) -> dict:
    """results.json without its scores (filled in by split)."""
    return {
        "task": setup.task.name,
        "kind": setup.task.kind,
        "init_from": cfg.init_from,
        "train_split": cfg.train_split,
        "steps": state.step,
        "epochs": setup.sampler.epoch_of(state.samples_seen) if setup.sampler else 0.0,
        "train_batch_size": engine.train_batch,
        "train_and_eval_s": round(train_s, 1),
        "git_sha": checkpoint.git_sha(),
        "scores": {},
    }


if __name__ == "__main__":
    main()
