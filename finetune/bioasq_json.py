"""BioASQ JSON as the official evaluator reads it: golden files and phase-B submissions.

A line-by-line counterpart of Task1bData.readData (github.com/BioASQ/Evaluation-Measures,
flat/BioASQEvaluation/src/data/Task1bData.java, with Gson's strict JsonReader): what it reads, how, and what
it refuses. finetune/bioasq_eval.py documents the rules and scores what this module reads.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from biobert.errors import UserError

GOLDEN_HINT = "pass the official golden file of this test set (e.g. 7B_golden.json, or 7B1_golden.json for batch 1)"
SUBMISSION_LAYOUT = 'expected {"questions": [{"id": ..., "exact_answer": [["a"], ["b"]] or "yes"}]}'
QUESTION_TYPES = ("factoid", "list", "yesno", "summary")  # Task1bData.readData: type.equals(...), case-sensitive


def read_yesno_answer(answer) -> str:
    """Task1bData.readData's reading of a yes/no answer string: "yes" if it contains "yes", else "no" if
    it contains "no", else "" (its "none": wrong either way)."""
    text = answer.lower() if isinstance(answer, str) else ""
    return "yes" if "yes" in text else "no" if "no" in text else ""


@dataclass
class GoldenQuestion:
    qid: str
    type: str  # "factoid", "list", "yesno", "summary"
    synonyms: list[list[str]]  # factoid: one list of lower-cased synonyms per item (list: per item); else []
    answer: str = ""  # yes/no: "yes" or "no"
    problem: str = ""  # why this question's answer cannot be used; raised only when its type is scored


# ------------------------------------------------------------------ the official reader (Task1bData)


class _Num(str):
    """A JSON number as its literal text: Gson's nextString() returns a number as written, so the Java
    reader takes the answer 5 as "5" and 5.0 as "5.0"."""


class _Obj:
    """A JSON object as its (key, value) pairs in file order, repeats kept: Gson's streaming reader meets
    every pair (a dict would keep only the last value of a repeated key)."""

    def __init__(self, pairs: list[tuple[str, object]]):
        self.pairs = pairs

    def plain(self) -> dict:
        return {k: _plain(v) for k, v in self.pairs}


def _plain(value):
    if isinstance(value, _Obj):
        return value.plain()
    return [_plain(v) for v in value] if isinstance(value, list) else value


@dataclass
class Submitted:
    """One question of a BioASQ file as Task1bData.readData keeps it."""

    index: int  # position in the file's `questions`
    qid: str | None = None
    type: str = ""  # the last of "factoid", "list", "yesno", "summary" given (setType is called for no other)
    answer: str | None = None  # a string `exact_answer`, as written
    lists: list[list[str]] | None = None  # an array `exact_answer`: its non-empty items, lower-cased
    fields: dict = field(default_factory=dict)  # the object (last value of a repeated key)

    def where(self) -> str:
        return f"questions[{self.index}]" + (f" (id {self.qid})" if self.qid is not None else "")


def _token(value) -> str:
    """Gson's name of the token a value starts with, as its exceptions print it."""
    for kind, name in (
        (_Obj, "BEGIN_OBJECT"),
        (list, "BEGIN_ARRAY"),
        (_Num, "NUMBER"),
        (str, "STRING"),
        (bool, "BOOLEAN"),
    ):
        if isinstance(value, kind):
            return name
    return "NULL"


def _refused(path: Path, where: str, problem: str, java: str, fix: str) -> UserError:
    return UserError(f"{path}: {where}: {problem}. The official evaluator stops on this file ({java}). {fix}")


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON (Gson's strict reader refuses it)")


def _parse(path: Path, what: str, hint: str):
    """The file's one JSON value, objects as `_Obj`, numbers as `_Num`; like Gson, nothing after it is read."""
    if not path.is_file():
        raise UserError(f"{path}: {what} file not found; {hint}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: {what} is not UTF-8 text (byte {e.start}): {e.reason}; {hint}") from None
    decoder = json.JSONDecoder(object_pairs_hook=_Obj, parse_int=_Num, parse_float=_Num, parse_constant=_no_constant)
    try:
        return decoder.raw_decode(text, len(text) - len(text.lstrip(" \t\n\r")))[0]
    except json.JSONDecodeError as e:
        raise UserError(f"{path}:{e.lineno}:{e.colno}: malformed JSON in {what}: {e.msg}; {hint}") from None
    except ValueError as e:
        raise UserError(f"{path}: malformed JSON in {what}: {e}; {hint}") from None


def read_questions(path: str | Path, what: str, *, gold: bool, hint: str = SUBMISSION_LAYOUT) -> list[Submitted]:
    """Every question of a BioASQ golden (`gold`) or submitted file, read as Task1bData.readData reads it:
    golden items keep their synonyms, submitted items their first string. What the Java reader cannot read
    is an error naming the file, the question and the Java call that stops."""
    path = Path(path)
    data = _parse(path, what, hint)
    if not isinstance(data, _Obj):
        raise _refused(path, "the file", f"is a JSON {_token(data)}", "readData: beginObject()", hint)
    questions: list[Submitted] = []
    lists = [value for key, value in data.pairs if key == "questions"]  # other keys: skipValue()
    if not lists:
        raise UserError(f"{path}: no `questions` list in this {what}; {hint}")
    for value in lists:
        if not isinstance(value, list):
            raise _refused(path, "`questions`", f"is a {_token(value)}", "readData: beginArray()", hint)
        for obj in value:
            if not isinstance(obj, _Obj):
                raise _refused(
                    path,
                    f"questions[{len(questions)}]",
                    f"is a {_token(obj)}, not an object",
                    "readData: beginObject()",
                    hint,
                )
            questions.append(_read_question(obj, len(questions), path, gold))
    return questions


def _read_question(obj: _Obj, index: int, path: Path, gold: bool) -> Submitted:
    q = Submitted(index, fields=obj.plain())
    ids = [v for k, v in obj.pairs if k == "id" and isinstance(v, str)]
    q.qid = ids[-1] if ids else None
    for key, value in obj.pairs:  # readData: one branch per key, in file order; any other key: skipValue()
        at = f"{q.where()}: `{key}`"
        if key in ("body", "type", "id"):
            _text(value, path, at, "readData: nextString()")
            if key == "type" and value in QUESTION_TYPES:
                q.type = value
        elif key in ("concepts", "documents"):
            for item in _array(value, path, at, f"read{key.capitalize()}: beginArray()"):
                _text(item, path, f"{at} item", f"read{key.capitalize()}: nextString()")
        elif key == "triples":
            _check_triples(value, path, at)
        elif key == "snippets":
            _check_snippets(value, path, at)
        elif key == "exact_answer":
            q.answer, q.lists = _read_exact(value, gold, path, at)
    return q


def _text(value, path: Path, at: str, java: str) -> None:
    if not isinstance(value, str):  # a string or a number (`_Num`): nextString() takes both
        raise _refused(
            path,
            at,
            f"is a {_token(value)}, where a string is read",
            f"{java}: Expected a string but was {_token(value)}",
            "Write a string.",
        )


def _array(value, path: Path, at: str, java: str) -> list:
    if not isinstance(value, list):
        raise _refused(
            path,
            at,
            f"is a {_token(value)}, not a list",
            f"{java}: Expected BEGIN_ARRAY but was {_token(value)}",
            "Write a list, or leave the field out (phase B does not score it).",
        )
    return value


def _objects(value, path: Path, at: str, java: str) -> list[_Obj]:
    for k, item in enumerate(_array(value, path, at, java)):
        if not isinstance(item, _Obj):
            raise _refused(
                path,
                f"{at}[{k}]",
                f"is a {_token(item)}, not an object",
                f"{java.split(':')[0]}: beginObject()",
                "Write an object, or leave the field out.",
            )
    return value


_SNIPPET_INTS = ("offsetInBeginSection", "offsetInEndSection")
_SNIPPET_TEXTS = ("document", "beginSection", "endSection", "text")
_INTEGER = re.compile(r"[+-]?\d+")
_DECIMAL = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _check_snippets(value, path: Path, at: str) -> None:
    """readSnippets: offsets by nextInt(), the other four keys by nextString(); any other key's value is
    left unread, so the next nextName() fails."""
    for k, snippet in enumerate(_objects(value, path, at, "readSnippets: beginArray()")):
        for name, v in snippet.pairs:
            where = f"{at}[{k}].{name}"
            if name in _SNIPPET_TEXTS:
                _text(v, path, where, "readSnippets: nextString()")
            elif name not in _SNIPPET_INTS:
                raise _refused(
                    path,
                    where,
                    "is not a snippet field (" + ", ".join(_SNIPPET_INTS + _SNIPPET_TEXTS) + ")",
                    "readSnippets reads no other key and leaves its value: nextName(): Expected a name",
                    "Remove the key.",
                )
            elif not _java_int(v):
                raise _refused(
                    path,
                    where,
                    f"is {v!r}, not a 32-bit integer",
                    "readSnippets: nextInt()",
                    "Write the character offset as an integer.",
                )


def _java_int(value) -> bool:
    """JsonReader.nextInt(): a number, or a string holding one, whose value is a 32-bit integer."""
    if not isinstance(value, str):
        return False
    if _INTEGER.fullmatch(value):
        number: float = int(value)
    elif _DECIMAL.fullmatch(value):
        number = float(value)
    else:
        return False
    return math.isfinite(number) and number == int(number) and -(2**31) <= number < 2**31


def _check_triples(value, path: Path, at: str) -> None:
    """readTriplesArray: "s" and "o" may be null, "p" is read by nextString(); other keys are skipped."""
    for k, triple in enumerate(_objects(value, path, at, "readTriplesArray: beginArray()")):
        for name, v in triple.pairs:
            if name == "p" or (name in ("s", "o") and v is not None):
                _text(v, path, f"{at}[{k}].{name}", "readTriplesArray: nextString()")


def _read_exact(value, gold: bool, path: Path, at: str) -> tuple[str | None, list[list[str]] | None]:
    """(answer, lists) of an `exact_answer` as readData reads it: a STRING is an answer string; an array
    whose first element is an array is a list of items (readExactAnswerListOfArraysv2 for golden files, v3,
    first string only, for submissions); anything else stops the Java reader."""
    fix = (
        'Write factoid and list answers as [["answer"], ["another answer"]] (factoid: ranked) and yes/no '
        'answers as "yes" or "no".'
    )
    if isinstance(value, str) and not isinstance(value, _Num):
        return value, None
    if not isinstance(value, list):
        raise _refused(
            path,
            at,
            f"is a {_token(value)}",
            "readData reads neither an array nor a string here, "
            f"so the next nextName() fails: Expected a name but was {_token(value)}",
            fix,
        )
    if value and not isinstance(value[0], list):
        flat = isinstance(value[0], str) and not isinstance(value[0], _Num)
        raise _refused(
            path,
            at,
            "is a flat list of strings" if flat else f"starts with a {_token(value[0])}",
            "readExactAnswerListOfArraysv3: beginArray(): Expected BEGIN_ARRAY but was STRING"
            if flat
            else f"readData: endArray(): Expected END_ARRAY but was {_token(value[0])}",
            fix,
        )
    lists = []
    for k, item in enumerate(value):
        if not isinstance(item, list):
            raise _refused(
                path,
                f"{at}[{k}]",
                f"is a {_token(item)}, not a list",
                "readExactAnswerListOfArrays"
                f"v{2 if gold else 3}: beginArray(): Expected BEGIN_ARRAY but was {_token(item)}",
                fix,
            )
        for s in item:
            _text(s, path, f"{at}[{k}]", "readExactAnswerArray: nextString()")
        if item:  # an empty item is never added: the loop that reads it does not run
            strings = [s.lower() for s in item]
            lists.append(strings if gold else strings[:1])
    return None, lists


# ---------------------------------------------------------------------------------- golden files


def read_golden(path: str | Path) -> dict[str, GoldenQuestion]:
    """A BioASQ golden file: {"questions": [{"id", "type", "exact_answer", ...}]}, as {id: question}.

    A golden question the official evaluator cannot score is an error (see the module docstring): a
    factoid one at once, a list or yes/no one only when that type is scored, so a factoid run is never
    stopped by a question it does not use.
    """
    path = Path(path)
    golden: dict[str, GoldenQuestion] = {}
    for q in read_questions(path, "golden", gold=True, hint=GOLDEN_HINT):
        if q.qid is None:
            raise UserError(f"{path}: {q.where()} has no string `id`; {GOLDEN_HINT}")
        if q.qid in golden:  # EvaluatePhaseB would score it twice, against one submitted answer
            raise UserError(f"{path}: question {q.qid} appears twice ({q.where()} again); keep one")
        golden[q.qid] = _golden_question(q, path)
    return golden


def _golden_question(q: Submitted, path: Path) -> GoldenQuestion:
    gold = GoldenQuestion(q.qid or "", q.type, [])
    if q.type in ("factoid", "list"):
        if q.lists:
            gold.synonyms = q.lists
        else:  # the Java code finds no golden item: every submission would score 0 on it
            found = "a string" if q.answer is not None else "an empty list" if q.lists is not None else "missing"
            gold.problem = (
                f"{path}: {q.type} question {q.qid} has no `exact_answer` list ({found}); expected "
                '[["answer", "synonym"], ...]; fix the golden file'
            )
            if q.type == "factoid":
                raise UserError(gold.problem)
    elif q.type == "yesno":
        gold.answer = read_yesno_answer(q.answer)  # "" for a list, a missing answer, or neither yes nor no
        if not gold.answer:
            raw = q.fields.get("exact_answer")
            gold.problem = (
                f'{path}: yes/no question {q.qid}: `exact_answer` is {raw!r}, expected "yes" or '
                '"no"; fix the golden file'
            )
    return gold


def read_submission(path: str | Path) -> list[Submitted]:
    """A BioASQ phase-B submission (or our predictions_test.json), every question in file order, read as
    the official evaluator reads it (`read_questions`); `pair_submission` pairs them with golden ids."""
    return read_questions(path, "BioASQ submission", gold=False)


def pair_submission(
    questions: Sequence[Submitted], golden_ids: Sequence[str], path: str | Path
) -> tuple[dict[str, Submitted], int]:
    """{id: the FIRST submitted question of that id} and how many later repeats were ignored, as
    Task1bData.getQuestion's scan from the top finds them. The scan calls getId().equals() on every
    question it passes: one without an id before some golden id's first match is a NullPointerException
    there, so it is refused; one after every golden id has matched is never reached."""
    first: dict[str, Submitted] = {}
    repeats = 0
    for q in questions:
        if q.qid is None:
            lacking = next((g for g in golden_ids if g not in first), None)
            if lacking is not None:
                raise UserError(
                    f"{path}: {q.where()} has no `id`; the official evaluator stops when it looks up "
                    f"golden question {lacking} past it (NullPointerException in Task1bData."
                    f"getQuestion). Give every question its `id`, or remove it."
                )
            break
        if q.qid in first:
            repeats += 1
        else:
            first[q.qid] = q
    return first, repeats
