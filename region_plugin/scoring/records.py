"""Read and check LLaVA-format conversation data (also Bunny's format) before any model loads.

A scoring run fails on a bad record in a second, not after a model load: the file must be a JSON
list (or JSONL) of {"image": ..., "conversations": [{"from": "human"|"gpt", "value": ...}, ...]}
and every image of the selected samples must exist under --image-folder.
"""
from __future__ import annotations

import json
import os
from typing import List, Tuple

from .metrics import ScoringError

EXAMPLE = ('[{"id": "0", "image": "cat.jpg", "conversations": [{"from": "human", "value": "<image>\\nWhat is '
           'this?"}, {"from": "gpt", "value": "A cat."}]}]')
IMAGE_TOKEN = "<image>"


def _load(path: str, flag: str) -> list:
    if not path:
        raise ScoringError(f"{flag} is required for the hidden-state and attention metrics; {EXAMPLE}")
    if not os.path.isfile(path):
        raise ScoringError(f"{flag} {path!r} does not exist; pass a LLaVA-format JSON file like {EXAMPLE}")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as first:
        try:  # JSON lines
            data = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError:
            raise ScoringError(f"{flag} {path!r} is not valid JSON or JSONL ({first}); expected {EXAMPLE}") from None
    if not isinstance(data, list):
        raise ScoringError(f"{flag} {path!r} is not LLaVA format: the top level is a {type(data).__name__}, "
                           f"expected a list of records like {EXAMPLE}")
    return data


def _check(record, i: int, path: str, flag: str) -> None:
    where = f"{flag} {path!r} is not LLaVA format: record {i}"
    if not isinstance(record, dict):
        raise ScoringError(f"{where} is a {type(record).__name__}, expected an object like {EXAMPLE}")
    conv = record.get("conversations")
    if not isinstance(conv, list) or not conv:
        raise ScoringError(f"{where} (id {record.get('id')!r}) has no \"conversations\" list; expected {EXAMPLE}")
    for t, turn in enumerate(conv):
        if not (isinstance(turn, dict) and turn.get("from") in ("human", "gpt") and isinstance(turn.get("value"), str)):
            raise ScoringError(f"{where} (id {record.get('id')!r}) turn {t} is not {{\"from\": \"human\"|\"gpt\", "
                               f"\"value\": str}}: {str(turn)[:80]}")
    if conv[0]["from"] != "human":
        raise ScoringError(f"{where} (id {record.get('id')!r}) must start with a \"human\" turn")
    n_img = sum(turn["value"].count(IMAGE_TOKEN) for turn in conv)
    if n_img > 1:
        raise ScoringError(f"{where} (id {record.get('id')!r}) has {n_img} {IMAGE_TOKEN} placeholders; one image "
                           "per sample is supported")
    if "image" in record and not isinstance(record["image"], str):
        raise ScoringError(f"{where} (id {record.get('id')!r}): \"image\" must be one file name")


def read_records(data: str, image_folder: str, num_samples: int, data_flag: str = "--data",
                 image_flag: str = "--image-folder") -> List[dict]:
    """The first `num_samples` records that have an image, each checked, with its image present."""
    if not isinstance(num_samples, int) or num_samples < 1:
        raise ScoringError(f"--num-samples {num_samples!r} must be a positive whole number")
    records = _load(data, data_flag)
    if not image_folder or not os.path.isdir(image_folder):
        raise ScoringError(f"{image_flag} {image_folder!r} is not a directory; pass the folder the \"image\" "
                           f"paths in {data} are relative to")
    chosen = []
    for i, record in enumerate(records):
        _check(record, i, data, data_flag)
        if "image" in record:
            chosen.append(record)
            if len(chosen) == num_samples:
                break
    if not chosen:
        raise ScoringError(f"{data_flag} {data!r} has no record with an \"image\"; the metrics compare image and "
                           f"text tokens, so use image-text samples like {EXAMPLE}")
    missing = [(r.get("id"), r["image"]) for r in chosen if not os.path.isfile(os.path.join(image_folder, r["image"]))]
    if missing:
        listed = ", ".join(f"{img!r} (id {rid!r})" for rid, img in missing[:5])
        raise ScoringError(f"{image_flag} {image_folder!r} is missing {len(missing)} image(s) named in {data_flag} "
                           f"{data!r}: {listed}; fix the folder or remove those records")
    return chosen


def conversation_turns(record: dict) -> List[Tuple[bool, str]]:
    """(is_human, text) per turn; `<image>` stays where the user put it, else leads the first turn.

    Upstream's eval scripts put the image first when a question has no placeholder; prompt
    builders of every codebase feed these turns to their own conversation template.
    """
    turns = [(t["from"] == "human", t["value"]) for t in record["conversations"]]
    if "image" in record and turns and not any(IMAGE_TOKEN in text for _, text in turns):
        turns[0] = (turns[0][0], f"{IMAGE_TOKEN}\n{turns[0][1]}")
    return turns
