"""`--layers SPEC` of the analysis tools: every `--region_layers` form plus `outside`.

`outside` = every decoder layer NOT in the region the training recorded in config.json
(`region_layers`), i.e. the layers a region run never touched.
"""
from __future__ import annotations

import json
import os
from typing import List, Optional

from ..spec import RegionSpecError, parse_region_layers
from .errors import AnalysisError

OUTSIDE = "outside"


def recorded_region(model_path: str, num_layers: int) -> Optional[List[int]]:
    """`region_layers` from --model-path's config.json (None when the run trained every layer)."""
    with open(os.path.join(model_path, "config.json")) as f:
        region = json.load(f).get("region_layers")
    if region is None:
        return None
    if not (isinstance(region, list) and all(isinstance(i, int) and 0 <= i < num_layers for i in region)):
        raise AnalysisError(f"--model-path {model_path}/config.json: region_layers={region!r} is not a list of "
                            f"layers 0-{num_layers - 1}")
    return sorted(region)


def resolve_layers(spec: str, num_layers: int, region: Optional[List[int]], flag: str = "--layers") -> List[int]:
    """The sorted layer list SPEC names; AnalysisError naming `flag` when it cannot be used."""
    if (spec or "").strip() == OUTSIDE:
        if region is None:
            raise AnalysisError(f"{flag} outside: --model-path records no region_layers in config.json (was it "
                                "trained with --region_layers?); name the layers instead, e.g. --layers 1-5")
        layers = [i for i in range(num_layers) if i not in set(region)]
        if not layers:
            raise AnalysisError(f"{flag} outside: the recorded region {region} covers all {num_layers} layers")
        return layers
    try:
        return parse_region_layers(spec, num_layers)
    except RegionSpecError as e:
        raise AnalysisError(str(e).replace("--region_layers", flag, 1) + " | outside") from None
