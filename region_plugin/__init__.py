"""Activate only the distributed visual region of an LVLM's LLM (Wang et al., ACL 2025).

The core (this package minus the codebase adapters `region_plugin.llava` / `region_plugin.bunny`)
depends only on torch/transformers/peft: it resolves a `--region_layers` spec, finds the decoder
stack of any HF model, restricts LoRA or full tuning to the region, and reports the cost.
"""
from .spec import RegionSpecError, format_layers, parse_region_layers, uniform_layers

__version__ = "0.1.0"
__all__ = ["RegionSpecError", "format_layers", "parse_region_layers", "uniform_layers", "__version__"]
