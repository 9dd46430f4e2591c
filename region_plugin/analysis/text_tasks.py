"""MMLU and BBH items in their standard local formats, the paper's prompts, and answer matching.

MMLU: per-subject CSVs without header (`question,A,B,C,D,answer`), `*_test.csv` evaluated, shots
from the same subject's `*_dev.csv` (the layout of the original `data/` tarball). BBH: one JSON
per task, `{"examples": [{"input": ..., "target": ...}]}`; shots are the task's first examples.
Replies are matched leniently (the paper allows extra explanation): the first option letter for
multiple choice, else the earliest of the task's distinct targets that occurs as whole words.
"""
from __future__ import annotations

import csv
import glob
import json
import os
import re
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

from .errors import AnalysisError

MMLU_PROMPT = "Answer with the option's letter from the given choices directly."
BBH_PROMPT = "Please answer this question in a word or phrase."
TASKS = ("mmlu", "bbh")
DEFAULT_SHOTS = {"mmlu": 5, "bbh": 0}
MMLU_FORMAT = "per-subject CSVs without header: question,A,B,C,D,answer (SUBJECT_test.csv, shots from SUBJECT_dev.csv)"
BBH_FORMAT = 'one JSON per task: {"examples": [{"input": "...", "target": "..."}]}'
_LETTER_TARGET = re.compile(r"^\(([A-Z])\)$")


@dataclass
class Item:
    """One question: the chat turns (shots answered, the last one open), the target and how to match it."""

    task: str
    id: str
    turns: List[Tuple[str, Optional[str]]]
    target: str
    candidates: List[str] = field(default_factory=list)  # for non-letter targets


def mmlu_question(row: Sequence[str]) -> str:
    q, *options = row[:5]
    return "\n".join([q.strip()] + [f"{letter}. {str(o).strip()}" for letter, o in zip("ABCD", options)]
                     + [MMLU_PROMPT])


def _read_csv(path: str) -> List[List[str]]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = [r for r in csv.reader(f) if r]
    for n, row in enumerate(rows, 1):
        if len(row) < 6 or row[5].strip() not in ("A", "B", "C", "D"):
            raise AnalysisError(f"--data {path!r} row {n} is not MMLU format ({MMLU_FORMAT}): {str(row)[:80]}")
    return rows


def load_mmlu(data_dir: str, shots: int, limit: Optional[int]) -> List[Item]:
    tests = sorted(glob.glob(os.path.join(data_dir, "**", "*_test.csv"), recursive=True))
    if not tests:
        raise AnalysisError(f"--data {data_dir!r} has no *_test.csv; MMLU data is {MMLU_FORMAT}")
    items = []
    for path in tests:
        subject = os.path.basename(path)[:-len("_test.csv")]
        dev = glob.glob(os.path.join(data_dir, "**", f"{subject}_dev.csv"), recursive=True)
        examples = _read_csv(dev[0]) if dev else []
        if len(examples) < shots:
            raise AnalysisError(f"--shots {shots}: subject {subject!r} has {len(examples)} dev examples "
                                f"({subject}_dev.csv under --data {data_dir!r}); lower --shots or add the dev split")
        header = f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n"
        context = [(mmlu_question(r), r[5].strip()) for r in examples[:shots]]
        for n, row in enumerate(_read_csv(path)[:limit]):
            turns = context + [(mmlu_question(row), None)]
            turns[0] = (header + turns[0][0], turns[0][1])
            items.append(Item(subject, f"{subject}/{n}", turns, row[5].strip()))
    return items


def load_bbh(data_dir: str, shots: int, limit: Optional[int]) -> List[Item]:
    files = sorted(glob.glob(os.path.join(data_dir, "*.json")))
    if not files:
        raise AnalysisError(f"--data {data_dir!r} has no *.json task files; BBH data is {BBH_FORMAT}")
    items = []
    for path in files:
        task = os.path.basename(path)[:-len(".json")]
        try:
            with open(path, encoding="utf-8") as f:
                examples = json.load(f)["examples"]
            pairs = [(str(e["input"]), str(e["target"]).strip()) for e in examples]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise AnalysisError(f"--data {path!r} is not BBH format ({BBH_FORMAT}): {type(e).__name__} {e}") from None
        if len(pairs) <= shots:
            raise AnalysisError(f"--shots {shots}: task {task!r} ({path}) has only {len(pairs)} examples")
        candidates = sorted({t for _, t in pairs})
        context = [(f"{q}\n{BBH_PROMPT}", t) for q, t in pairs[:shots]]
        for n, (q, t) in enumerate(pairs[shots:][:limit]):
            items.append(Item(task, f"{task}/{n}", context + [(f"{q}\n{BBH_PROMPT}", None)], t, candidates))
    return items


def load_items(task: str, data_dir: str, shots: int, limit: Optional[int]) -> List[Item]:
    if not os.path.isdir(data_dir or ""):
        raise AnalysisError(f"--data {data_dir!r} is not a directory; "
                            f"pass {'MMLU ' + MMLU_FORMAT if task == 'mmlu' else 'BBH ' + BBH_FORMAT}")
    return (load_mmlu if task == "mmlu" else load_bbh)(data_dir, shots, limit)


def parse_choice(reply: str, letters: str = "ABCD") -> Optional[str]:
    """The option letter a reply gives: a leading letter, else '(X)', 'X.'/'X)'/'X:', else a lone letter."""
    text = reply.strip()
    lead = re.match(rf"^\(?([{letters}])(?:[\s\.\):,]|$)", text)
    if lead:
        return lead.group(1)
    for pattern in (rf"\(([{letters}])\)", rf"\b([{letters}])[\.\):]", rf"\b([{letters}])\b"):
        m = re.search(pattern, text)
        if m:
            return m.group(1)
    return None


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s\(\)\[\]\{\}<>]", " ", text.lower()).split())


def parse_bbh(reply: str, item: Item) -> Optional[str]:
    """The answer a BBH reply gives: option letter for '(X)' targets, else the earliest task target found."""
    letter = _LETTER_TARGET.match(item.target)
    if letter:
        found = parse_choice(reply, "A-R")
        return f"({found})" if found else None
    text = f" {_norm(reply)} "
    best = None
    for cand in item.candidates:
        pos = text.find(f" {_norm(cand)} ")
        if pos >= 0 and (best is None or (pos, -len(cand)) < best[0]):
            best = ((pos, -len(cand)), cand)
    if best is not None:
        return best[1]
    return reply.strip() or None


def predict(reply: str, item: Item, task: str) -> Optional[str]:
    return parse_choice(reply) if task == "mmlu" else parse_bbh(reply, item)
