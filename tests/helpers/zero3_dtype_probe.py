"""Build a module under real DeepSpeed zero.Init (1 gloo rank, CPU), add a late fp32 submodule, align dtypes."""
import json
import os

import deepspeed
import torch
from torch import nn

from region_plugin.distributed import align_zero3_dtypes

os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=os.environ.get("PROBE_PORT", "29533"), RANK="0",
                  WORLD_SIZE="1", LOCAL_RANK="0")
deepspeed.init_distributed(dist_backend="gloo")
cfg = {"train_batch_size": 1, "zero_optimization": {"stage": 3}, "bf16": {"enabled": True}}
with deepspeed.zero.Init(config_dict_or_path=cfg, dtype=torch.bfloat16):
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8))
model.add_module("projector", nn.Linear(8, 8))  # like LLaVA's mm_projector: created after from_pretrained
before = {n: str(p.dtype) for n, p in model.named_parameters()}
cast = align_zero3_dtypes(model, torch.bfloat16)
after = {n: str(p.dtype) for n, p in model.named_parameters()}
plain = align_zero3_dtypes(nn.Linear(2, 2), torch.bfloat16)
print(json.dumps({"before": before, "after": after, "cast": cast, "plain": plain,
                  "partitioned": sorted(n for n, p in model.named_parameters() if hasattr(p, "ds_id"))}))
