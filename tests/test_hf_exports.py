"""Every fine-tuned export works as it is in Hugging Face's own API (pipelines, Auto classes), carries label
names (typed NER labels, RE and yes/no class names) and a model card; typed NER exports still read back into
evaluation-only runs, further training and predict.py, and so do the untyped ones written before."""

import json
import shutil
from pathlib import Path

import pytest
from test_bioasq_yesno_list import write_data as write_yesno_data
from test_predict import write_ner_split

from biobert import integrity
from biobert.errors import UserError
from conftest import write_tiny_bert, write_vocab
from finetune.predict import main as predict_main
from finetune.run_task import main as run_task_main
from finetune.tasks.re_task import CHEMPROT_LABELS

finetune = run_task_main.__wrapped__
predict = predict_main.__wrapped__
FIXTURES = Path(__file__).parent / "fixtures"
TYPED = {0: "O", 1: "B-Disease", 2: "I-Disease"}


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """The tiny BERT, presented as a pre-training export of this repository (its biobert_run.json)."""
    root = tmp_path_factory.mktemp("hf_base")
    model = write_tiny_bert(root / "pretrained", write_vocab(root / "vocab.txt"))
    provenance = {
        "run_config": {
            "run": {"data_dir": "shards/pubmed_2026", "init_from": "bert-base-cased", "max_steps": 7},
            "data_manifest": {"seq_len": 64, "config_hash": "cafe01", "tokenizer_hash": "beef02", "counts": {}},
        },
        "train_state": {"step": 7, "samples_seen": 448, "tokens_seen": 28672},
        "git_sha": "0123abc",
    }
    (model / "biobert_run.json").write_text(json.dumps(provenance))
    return model


def args(task, data_dir, init_from, run_dir, *extra):
    return [
        "--task",
        task,
        "--data_dir",
        str(data_dir),
        "--init_from",
        str(init_from),
        "--run_dir",
        str(run_dir),
        "--progress",
        "false",
        "--eval_split",
        "",
        *extra,
    ]


def quiet_pipeline(*a, **k):
    from transformers import pipeline
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    return pipeline(*a, device="cpu", **k)


# ------------------------------------------------------------------------------------------------ NER

NER_SEQ = ("--max_seq_length", "24", "--doc_stride", "4")


@pytest.fixture(scope="module")
def ner(base, tmp_path_factory):
    root = tmp_path_factory.mktemp("hf_ner")
    data = root / "NCBI-disease"
    data.mkdir()
    write_ner_split(data / "train.tsv", 80, 1)
    write_ner_split(data / "test.tsv", 16, 3, long_every=4)
    run = root / "run"
    extra = ("--epochs", "10", "--ds", "train_batch_size=16", "--ds", "optimizer.params.lr=3e-3", *NER_SEQ)
    results = finetune(args("ncbi_disease", root, base, run, *extra))
    return {"root": root, "run": run, "hf": run / "hf", "results": results}


def test_ner_export_is_typed_and_the_pipeline_returns_whole_typed_entities(ner, tmp_path):
    from transformers import AutoConfig

    assert AutoConfig.from_pretrained(str(ner["hf"])).id2label == TYPED
    assert json.loads((ner["run"] / "config.json").read_text())["labels"] == ["O", "B", "I"]  # trained as the corpus
    tagger = quiet_pipeline("token-classification", model=str(ner["hf"]), aggregation_strategy="simple")
    text = "The cancer disease was observed in patients with tumor and the gene expression was increased."
    entities = tagger(text)
    assert entities and {e["entity_group"] for e in entities} == {"Disease"}, entities
    assert any("cancer" in e["word"] for e in entities) and any("tumor" in e["word"] for e in entities), entities
    # the same spans as predict.py (every word here is one WordPiece, so first-piece labelling agrees)
    src = tmp_path / "doc.txt"
    src.write_text(text + "\n")
    out = tmp_path / "preds.jsonl"
    predict(["--model", str(ner["hf"]), "--input", str(src), "--out", str(out), *NER_SEQ])
    ours = json.loads(out.read_text())["entities"]
    assert [(e["start"], e["end"], e["label"]) for e in ours] == [
        (int(e["start"]), int(e["end"]), e["entity_group"]) for e in entities
    ]


def test_typed_export_reads_back_like_the_untyped_ones_did(ner, tmp_path):
    """Evaluation only (--train_split ""), from the typed export and from an untyped copy (an export written
    before labels were typed): the trained run's predictions and scores; further training is accepted."""
    trained = ner["results"]["scores"]["test"]
    untyped = tmp_path / "untyped_hf"
    shutil.copytree(ner["hf"], untyped)
    config = json.loads((untyped / "config.json").read_text())
    config["id2label"], config["label2id"] = {"0": "O", "1": "B", "2": "I"}, {"O": 0, "B": 1, "I": 2}
    (untyped / "config.json").write_text(json.dumps(config))
    for name, model in (("typed", ner["hf"]), ("untyped", untyped)):
        run = tmp_path / f"eval_{name}"
        evaluated = finetune(args("ncbi_disease", ner["root"], model, run, "--train_split", "", *NER_SEQ))
        assert evaluated["scores"]["test"]["f1"] == pytest.approx(trained["f1"]), name
        assert evaluated["scores"]["test"]["predicted_entities"] == trained["predicted_entities"] > 0
        assert (run / "predictions_test.txt").read_text() == (ner["run"] / "predictions_test.txt").read_text()
    # predict.py: the type of typed labels; the dataset's name for untyped ones, as before
    src = tmp_path / "doc.txt"
    src.write_text("The cancer disease cells.\n")
    for model, label in ((ner["hf"], "Disease"), (untyped, "Disease")):  # untyped: the TaskSpec's type
        predict(["--model", str(model), "--input", str(src), "--out", str(tmp_path / "p.jsonl"), *NER_SEQ])
        assert {e["label"] for e in json.loads((tmp_path / "p.jsonl").read_text())["entities"]} == {label}
    # further training from the typed export on the untyped corpus: the same label map, accepted
    more = finetune(args("ncbi_disease", ner["root"], ner["hf"], tmp_path / "more", "--max_steps", "1", *NER_SEQ))
    assert more["steps"] == 1
    assert json.loads((tmp_path / "more" / "hf" / "config.json").read_text())["id2label"] == {
        str(k): v for k, v in TYPED.items()
    }
    # a corpus typed with another entity type is another label map: refused, as before
    chem = tmp_path / "chem" / "NCBI-disease"
    chem.mkdir(parents=True)
    text = (ner["root"] / "NCBI-disease" / "train.tsv").read_text()
    (chem / "train.tsv").write_text(text.replace("\tB\n", "\tB-Chemical\n").replace("\tI\n", "\tI-Chemical\n"))
    shutil.copy(chem / "train.tsv", chem / "test.tsv")
    with pytest.raises(UserError, match="BertForTokenClassification with labels"):
        finetune(args("ncbi_disease", chem.parent, ner["hf"], tmp_path / "chem_run", "--max_steps", "1", *NER_SEQ))


def test_model_card_names_the_task_data_settings_and_final_scores(ner, base):
    card = (ner["hf"] / "README.md").read_text()
    header = card.split("---")[1]
    for line in ("language: en", "library_name: transformers", "pipeline_tag: token-classification"):
        assert line in header.splitlines(), header
    assert '- "ncbi_disease"' in header and '- "named-entity-recognition"' in header
    assert "NCBI-disease" in card and f"initialised from `{base}`" in card
    assert "7 steps, 448 sequences, 28,672 tokens" in card and "`shards/pubmed_2026`" in card  # the base's run
    assert "| learning rate | 0.003 |" in card and "| global batch (sequences) | 16 |" in card
    assert "| max sequence length / doc stride | 24 / 4 |" in card and "10.0 epochs" in card
    test = ner["results"]["scores"]["test"]
    assert f"- **test**: precision {test['precision']:.2f}, recall {test['recall']:.2f}, f1 {test['f1']:.2f}" in card
    assert "--task ncbi_disease" in card and "--ds optimizer.params.lr=3e-3" in card
    assert "`B-Disease`" in card
    # the card was rewritten after the save: the checkpoint's integrity record still vouches for every file
    integrity.verify(ner["hf"].resolve().parent)


def test_model_card_at_a_save_before_the_scores_exist(base, tmp_path):
    """An intermediate checkpoint's export has a card without scores (they are computed at the end)."""
    root = tmp_path / "data"
    (root / "NCBI-disease").mkdir(parents=True)
    write_ner_split(root / "NCBI-disease" / "train.tsv", 8, 1)
    write_ner_split(root / "NCBI-disease" / "test.tsv", 4, 3)
    run = tmp_path / "run"
    finetune(args("ncbi_disease", root, base, run, "--max_steps", "2", "--save_every", "1", *NER_SEQ))
    first = (run / "checkpoints" / "step_00000001" / "hf" / "README.md").read_text()
    assert "Not computed at this checkpoint (step 1)" in first and "- **test**" not in first
    assert "- **test**" in (run / "hf" / "README.md").read_text()
    integrity.verify(run / "checkpoints" / "step_00000001")


# ------------------------------------------------------------------------------------------- RE, yes/no


def test_re_export_names_its_classes_in_the_text_classification_pipeline(base, tmp_path):
    run = tmp_path / "chemprot"
    extra = ("--max_seq_length", "64", "--epochs", "1", "--ds", "train_batch_size=16")
    results = finetune(args("chemprot", FIXTURES / "re" / "chemprot", base, run, *extra))
    from transformers import AutoConfig

    assert list(AutoConfig.from_pretrained(str(run / "hf")).id2label.values()) == list(CHEMPROT_LABELS)
    rows = [x.split("\t") for x in (run / "predictions_test.txt").read_text().splitlines()[1:]]
    classify = quiet_pipeline("text-classification", model=str(run / "hf"))
    got = classify([r[1] for r in rows])
    assert [g["label"] for g in got] == [r[3] for r in rows]  # run_task's own predictions, by name
    assert all(g["label"] in CHEMPROT_LABELS for g in got)
    card = (run / "hf" / "README.md").read_text()
    assert "pipeline_tag: text-classification" in card and '- "relation-extraction"' in card
    assert f"f1 {results['scores']['test']['f1']:.2f}" in card and "BC6ENTC" in card


def test_yesno_export_names_its_classes(base, tmp_path):
    data = write_yesno_data(tmp_path / "QA" / "BioASQ")
    run = tmp_path / "yesno"
    extra = ("--max_seq_length", "48", "--doc_stride", "8", "--max_steps", "2", "--ds", "train_batch_size=4")
    finetune(args("bioasq_yesno_7b", data, base, run, *extra))
    classify = quiet_pipeline("text-classification", model=str(run / "hf"))
    got = classify({"text": "Is the receptor in the brain?", "text_pair": "The receptor binding was increased."})
    assert got["label"] in ("no", "yes"), got
    assert "pipeline_tag: text-classification" in (run / "hf" / "README.md").read_text()


# ------------------------------------------------------------------------------------------------- QA


def test_qa_export_answers_through_the_auto_classes(base, tmp_path):
    """transformers 5 (pinned) removed the question-answering pipeline; its steps are the Auto classes below,
    so the export must load in them: a fast tokenizer with offsets and a length limit the model can take."""
    import torch
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer
    from transformers.pipelines import SUPPORTED_TASKS

    run = tmp_path / "qa"
    extra = ("--max_seq_length", "48", "--doc_stride", "8", "--epochs", "1", "--ds", "train_batch_size=4")
    results = finetune(args("bioasq_7b", FIXTURES / "qa", base, run, *extra))
    hf = str(run / "hf")
    tokenizer = AutoTokenizer.from_pretrained(hf)
    model = AutoModelForQuestionAnswering.from_pretrained(hf).eval()
    assert tokenizer.is_fast and tokenizer.model_max_length == model.config.max_position_embeddings == 128
    question, context = "Which gene is mutated?", "Mutation of the gene in human cells increased cancer risk. " * 6
    enc = tokenizer(question, context, truncation="only_second", return_offsets_mapping=True, return_tensors="pt")
    assert enc["input_ids"].shape[1] <= 128
    offsets = enc.pop("offset_mapping")[0].tolist()
    in_context = torch.tensor([s == 1 for s in enc.sequence_ids(0)])
    with torch.no_grad():
        out = model(**enc)
    start = int(out.start_logits[0].masked_fill(~in_context, -1e9).argmax())
    end = start + int(out.end_logits[0, start:].masked_fill(~in_context[start:], -1e9)[:30].argmax())
    answer = context[offsets[start][0] : offsets[end][1]]
    assert answer and answer.strip() in context
    if "question-answering" in SUPPORTED_TASKS:  # transformers 4.x
        got = quiet_pipeline("question-answering", model=hf)(question=question, context=context)
        assert context[got["start"] : got["end"]] == got["answer"]
    card = (run / "hf" / "README.md").read_text()
    assert "pipeline_tag: question-answering" in card and "BioASQ 7b factoid" in card
    assert f"strict_acc {results['scores']['test']['strict_acc']:.2f}" in card
