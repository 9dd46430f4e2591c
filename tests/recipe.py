"""Upstream's own finetune recipes, read verbatim from tests/recipes/, and the ONE function that localizes them.

The files in tests/recipes/ are unmodified copies of upstream files (names carry repo and commit):
  llava-c121f04-finetune_lora.sh   LLaVA  scripts/v1_5/finetune_lora.sh   @ c121f0432da27facab705978f83c4ada465e46fd
  llava-c121f04-zero{2,3}.json     LLaVA  scripts/zero{2,3}.json           @ c121f04
  bunny-08273ac-finetune_lora.sh   Bunny  script/train/finetune_lora.sh    @ 08273acbd83b6836c03dce25cc134eb6b9cedba5
  bunny-08273ac-zero{2,3}.json     Bunny  script/deepspeed/zero{2,3}.json  @ 08273ac
A user's command line is the contract: `localize` swaps only paths, sizes and CPU-only settings;
every other upstream flag (`--mm_projector_lr`, `--save_strategy steps`, `--gradient_checkpointing`,
upstream's DeepSpeed JSON, ...) reaches the plugin exactly as the script passes it.
"""
from __future__ import annotations

import shlex
from pathlib import Path
from typing import Dict, List

RECIPES = Path(__file__).parent / "recipes"
SCRIPTS = {"llava": "llava-c121f04-finetune_lora.sh", "bunny": "bunny-08273ac-finetune_lora.sh"}
PREFIX = {"llava": "llava-c121f04", "bunny": "bunny-08273ac"}


def upstream_flags(codebase: str) -> List[str]:
    """The flags upstream's finetune_lora.sh passes to its train script, as the shell would split them."""
    text = (RECIPES / SCRIPTS[codebase]).read_text()
    command = text[text.index("deepspeed "):].replace("\\\n", " ")
    command = command.split("|")[0]  # Bunny pipes into `tee`
    words = shlex.split(command)
    return words[2:]  # drop `deepspeed <train script>`


def zero_config(codebase: str, stage: int) -> str:
    """Path of upstream's own DeepSpeed JSON for ZeRO-`stage`."""
    return str(RECIPES / f"{PREFIX[codebase]}-zero{stage}.json")


def localize(argv: List[str], paths: Dict[str, str], steps: int, save_steps: int = 1, bf16: bool = False,
             ) -> List[str]:
    """The only change the tests make to upstream's recipe: paths, sizes and CPU-only settings.

    paths: values for --model_name_or_path, --data_path, --image_folder, --vision_tower,
    --pretrain_mm_mlp_adapter, --output_dir, --deepspeed (and --model_type/--version for Bunny's
    tiny model). Sizes: batch 4, no accumulation, LoRA r=8/alpha=16, 256 tokens, `steps` steps,
    a save every `save_steps`. CPU-only: no TF32, no dataloader workers, no wandb, bf16 only where the
    CPU stack runs it (DeepSpeed's CPU accelerator refuses it through the Trainer).
    """
    sizes = {"--per_device_train_batch_size": "4", "--gradient_accumulation_steps": "1", "--lora_r": "8",
             "--lora_alpha": "16", "--model_max_length": "256", "--save_steps": str(save_steps)}
    cpu_only = {"--tf32": "False", "--dataloader_num_workers": "0", "--report_to": "none",
                "--bf16": str(bf16)}
    swap = {**{f"--{k}": v for k, v in paths.items()}, **sizes, **cpu_only}
    out, seen = [], set()
    for i, word in enumerate(argv):
        if i > 0 and argv[i - 1] in swap:
            out.append(swap[argv[i - 1]])
            seen.add(argv[i - 1])
        else:
            out.append(word)
    missing = sorted(set(swap) - seen - {"--model_type", "--version"})
    assert not missing, f"upstream recipe lost flags the tests localize: {missing}"
    return out + ["--max_steps", str(steps)]
