"""Read and check LLaVA-format conversation data (also Bunny's format) before any model loads.

A scoring run fails on a bad record in a second, not after a model load: the file must be a JSON
list (or JSONL) of {"image": ..., "conversations": [{"from": "human"|"gpt", "value": ...}, ...]}
and every image of the selected samples must exist under --image-folder.
"""
from __future__ import annotations

import json
import os
import random
from typing import List, Optional, Tuple

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
                 image_flag: str = "--image-folder", seed: Optional[int] = None) -> List[dict]:
    """`num_samples` records that have an image, each checked, with its image present (see select_records)."""
    return select_records(data, image_folder, num_samples, data_flag, image_flag, seed)[1]


def select_records(data: str, image_folder: str, num_samples: int, data_flag: str = "--data",
                   image_flag: str = "--image-folder", seed: Optional[int] = None) -> Tuple[List[int], List[dict]]:
    """(positions in the --data file, records) of `num_samples` records that have an image.

    seed=None takes the first ones (a fixed calibration prefix); an int samples them without
    replacement, as the paper samples its scoring data; the positions go into scores.json's meta.
    """
    if not isinstance(num_samples, int) or num_samples < 1:
        raise ScoringError(f"--num-samples {num_samples!r} must be a positive whole number")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or seed < 0):
        raise ScoringError(f"--seed {seed!r} must be a whole number >= 0")
    records = _load(data, data_flag)
    if not image_folder or not os.path.isdir(image_folder):
        raise ScoringError(f"{image_flag} {image_folder!r} is not a directory; pass the folder the \"image\" "
                           f"paths in {data} are relative to")
    positions, chosen = [], []
    for i, record in enumerate(records):
        _check(record, i, data, data_flag)
        if "image" in record:
            positions.append(i)
            chosen.append(record)
            if seed is None and len(chosen) == num_samples:
                break
    if seed is not None:
        picked = sample_indices(len(chosen), num_samples, seed)
        positions, chosen = [positions[i] for i in picked], [chosen[i] for i in picked]
    if not chosen:
        raise ScoringError(f"{data_flag} {data!r} has no record with an \"image\"; the metrics compare image and "
                           f"text tokens, so use image-text samples like {EXAMPLE}")
    missing = [(r.get("id"), r["image"]) for r in chosen if not os.path.isfile(os.path.join(image_folder, r["image"]))]
    if missing:
        listed = ", ".join(f"{img!r} (id {rid!r})" for rid, img in missing[:5])
        raise ScoringError(f"{image_flag} {image_folder!r} is missing {len(missing)} image(s) named in {data_flag} "
                           f"{data!r}: {listed}; fix the folder or remove those records")
    check_images(chosen, image_folder, image_flag)
    return positions, chosen


def sample_indices(population: int, num_samples: int, seed: int) -> List[int]:
    """Sorted positions of `num_samples` of `population` items drawn without replacement (all if fewer)."""
    if population <= num_samples:
        return list(range(population))
    return sorted(random.Random(seed).sample(range(population), num_samples))


def check_images(records: List[dict], image_folder: str, image_flag: str = "--image-folder") -> None:
    """Decode every selected image now, so a truncated or non-image file fails before any weights load."""
    from PIL import Image

    for r in records:
        path = os.path.join(image_folder, r["image"])
        try:
            with Image.open(path) as im:
                im.load()
        except Exception as e:  # noqa: BLE001 - PIL raises many types for bad files; name the file either way
            raise ScoringError(f"{image_flag} {image_folder!r}: image {r['image']!r} (id {r.get('id')!r}) cannot be "
                               f"decoded ({type(e).__name__}: {e}); replace the file or remove that record") from None


def conversation_turns(record: dict) -> List[Tuple[bool, str]]:
    """(is_human, text) per turn; `<image>` stays where the user put it, else leads the first turn.

    Upstream's eval scripts put the image first when a question has no placeholder; prompt
    builders of every codebase feed these turns to their own conversation template.
    """
    turns = [(t["from"] == "human", t["value"]) for t in record["conversations"]]
    if "image" in record and turns and not any(IMAGE_TOKEN in text for _, text in turns):
        turns[0] = (turns[0][0], f"{IMAGE_TOKEN}\n{turns[0][1]}")
    return turns
