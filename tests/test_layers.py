"""Decoder-stack discovery and region restriction on real transformers / LLaVA models (no training)."""
import types

import pytest
from transformers import (GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, MistralConfig,
                          MistralForCausalLM, MptConfig, MptForCausalLM)

from region_plugin.layers import (find_decoder_stack, parameter_breakdown, region_linear_names,
                                  restrict_full_tuning, trainable_layers)
from region_plugin.training import RegionError, RegionRun

SMALL = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_attention_heads=4, num_key_value_heads=4,
             max_position_embeddings=64)


def _llama(n=6):
    return LlamaForCausalLM(LlamaConfig(num_hidden_layers=n, **SMALL))


@pytest.mark.parametrize("build,prefix,pattern", [
    (lambda: _llama(), "model.layers", "layers"),
    (lambda: MistralForCausalLM(MistralConfig(num_hidden_layers=6, **SMALL)), "model.layers", "layers"),
    (lambda: MptForCausalLM(MptConfig(n_layers=6, d_model=32, n_heads=4, vocab_size=64)), "transformer.blocks",
     "blocks"),
    (lambda: GPT2LMHeadModel(GPT2Config(n_layer=6, n_embd=32, n_head=4, vocab_size=64)), "transformer.h", "h"),
])
def test_decoder_stack_found_across_architectures(build, prefix, pattern):
    model = build()
    stack = find_decoder_stack(model)
    assert (stack.prefix, stack.num_layers, stack.pattern) == (prefix, 6, pattern)
    names = region_linear_names(model, [1, 4], stack)
    assert names and {stack.layer_of(n) for n in names} == {1, 4}


def test_region_linear_names_are_full_and_complete_for_llama():
    names = region_linear_names(_llama(), [0, 5])
    assert len(names) == 14 and names[0] == "model.layers.0.mlp.down_proj"
    assert "model.layers.5.self_attn.q_proj" in names


@pytest.fixture(scope="module")
def llava_with_tower(tmp_path_factory):
    """An upstream LlavaLlamaForCausalLM whose CLIP tower is LOADED and has as many layers as the LLM."""
    from llava.model import LlavaLlamaForCausalLM
    from llava.model.language_model.llava_llama import LlavaConfig
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    tower_dir = tmp_path_factory.mktemp("clip-8-layers")
    CLIPVisionModel(CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=8,
                                     num_attention_heads=4, image_size=32, patch_size=8)).save_pretrained(tower_dir)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(tower_dir)
    model = LlavaLlamaForCausalLM(LlavaConfig(num_hidden_layers=8, **SMALL))
    args = types.SimpleNamespace(vision_tower=str(tower_dir), mm_vision_select_layer=-2, mm_vision_select_feature="patch",
                                 pretrain_mm_mlp_adapter=None, mm_patch_merge_type="flat", mm_projector_type="mlp2x_gelu")
    model.get_model().initialize_vision_modules(model_args=args)
    assert len(model.get_vision_tower().vision_tower.vision_model.encoder.layers) == 8
    return model


def test_stack_and_targets_skip_a_loaded_vision_tower_of_equal_depth(llava_with_tower):
    stack = find_decoder_stack(llava_with_tower)
    assert stack.prefix == "model.layers"
    run = RegionRun([0, 4], 8)
    targets = run.lora_targets(llava_with_tower)
    assert len(targets) == 14 and not any("vision" in t or "mm_projector" in t for t in targets)


def test_lora_with_full_names_stays_out_of_the_tower_where_layers_to_transform_would_not(llava_with_tower):
    import copy

    from peft import LoraConfig, get_peft_model

    run = RegionRun([0, 4], 8)
    ours = get_peft_model(copy.deepcopy(llava_with_tower), LoraConfig(r=2, target_modules=run.lora_targets(llava_with_tower)))
    run.prepare(ours, lora=True)
    assert run.lora_modules == 14
    assert ours.peft_config["default"].layers_to_transform == [0, 4]
    # The naive alternative (leaf names + layers_to_transform) also wraps the CLIP encoder's layers 0 and 4.
    naive = get_peft_model(copy.deepcopy(llava_with_tower), LoraConfig(
        r=2, target_modules=["q_proj", "k_proj", "v_proj", "out_proj"], layers_to_transform=[0, 4]))
    tower_lora = [n for n, m in naive.named_modules() if "vision_tower" in n and hasattr(m, "lora_A")]
    assert tower_lora, "peft behaviour changed: the pitfall this plugin avoids no longer exists"


def test_restrict_full_tuning_freezes_everything_else_in_the_llm(llava_with_tower):
    import copy

    model = copy.deepcopy(llava_with_tower)
    for p in model.get_model().mm_projector.parameters():
        p.requires_grad_(True)
    restrict_full_tuning(model, [2, 5])
    stack = find_decoder_stack(model)
    assert trainable_layers(model, stack) == [2, 5]
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert all(n.startswith(("model.layers.2.", "model.layers.5.", "model.mm_projector.")) for n in trainable)
    assert any(n.startswith("model.mm_projector.") for n in trainable)  # upstream's choice is kept
    breakdown = parameter_breakdown(model)
    per_layer = sum(p.numel() for p in model.model.layers[0].parameters())
    assert breakdown["llm"]["trainable"] == 2 * per_layer
    assert breakdown["vision_tower"]["trainable"] == 0 and breakdown["projector"]["trainable"] > 0


def test_parameter_breakdown_counts_tied_embeddings_once():
    model = LlamaForCausalLM(LlamaConfig(num_hidden_layers=2, tie_word_embeddings=True, **SMALL))
    assert parameter_breakdown(model)["llm"]["total"] == sum(p.numel() for p in model.parameters())


def test_prepare_refuses_lora_outside_the_region():
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(_llama(), LoraConfig(r=2, target_modules=["q_proj"]))
    with pytest.raises(RegionError, match="LoRA landed outside the region"):
        RegionRun([0], 6).prepare(model, lora=True)


def test_region_larger_than_model_is_caught_at_prepare():
    with pytest.raises(RegionError, match="config.json said 12"):
        RegionRun([0], 12).lora_targets(_llama(6))
