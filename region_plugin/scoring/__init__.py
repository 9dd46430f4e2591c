"""Layer-importance scoring for any HF decoder stack (the paper's Appendix A metrics, Sec 6 pruning input).

Codebase-agnostic: it needs a model, batches with an image-token mask (`ScoringBatch`) and, for the
parameter metrics, the backbone's checkpoint files. Codebase adapters (region_plugin.adapters)
supply loading and batches; this package never imports `llava` or `bunny` itself.

    from region_plugin.scoring import score_checkpoint
    scores = score_checkpoint("llava-v1.5-7b", data="llava.json", image_folder="imgs", metrics=("angular",))
"""
from .api import score_checkpoint
from .hidden import HiddenStateScorer, ScoringBatch
from .metrics import ALL_METRICS, ATTENTION_METRICS, HIDDEN_METRICS, PARAM_METRICS, ScoringError, parse_metrics
from .params import TensorFiles, param_change_scores

__all__ = ["score_checkpoint", "HiddenStateScorer", "ScoringBatch", "ScoringError", "parse_metrics", "ALL_METRICS",
           "HIDDEN_METRICS", "ATTENTION_METRICS", "PARAM_METRICS", "TensorFiles", "param_change_scores"]
