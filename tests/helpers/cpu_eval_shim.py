"""Run an upstream LLaVA eval script on CPU (tests only): its hard `.cuda()` calls become no-ops.

Usage: python cpu_eval_shim.py llava.eval.model_vqa_loader --model-path ... (script flags)
Only device placement is redirected; the script's own logic runs unchanged.
"""
import functools
import runpy
import sys

import torch


def _cpu(device):
    return "cpu" if isinstance(device, (str, torch.device)) and str(device).startswith("cuda") else device


_orig_to = torch.Tensor.to


def _to(self, *args, **kwargs):
    args = tuple(_cpu(a) for a in args)
    if "device" in kwargs:
        kwargs["device"] = _cpu(kwargs["device"])
    return _orig_to(self, *args, **kwargs)


torch.Tensor.to = _to
torch.Tensor.cuda = lambda self, *a, **k: self
torch.nn.Module.cuda = lambda self, *a, **k: self

import llava.model.builder as builder  # noqa: E402

builder.load_pretrained_model = functools.partial(builder.load_pretrained_model, device="cpu", device_map="cpu")

if __name__ == "__main__":
    module = sys.argv[1]
    sys.argv = [module] + sys.argv[2:]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
