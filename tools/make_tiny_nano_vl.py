"""Write a tiny random checkpoint folder in the Nemotron-Nano-12B-v2-VL layout.

The folder has what a published Nano-VL-v2 folder has: `config.json` with `llm_config` and
`vision_config`, bfloat16 weights sharded over three safetensors files with
`model.safetensors.index.json`, and a tokenizer (`tokenizer.json`, `tokenizer_config.json` with
a chat template, `special_tokens_map.json`). Only the sizes are tiny: tiles of 64 pixels, a
12-layer ViT of width 192 (timm's `vit_tiny_patch16_224`), a 5-layer hybrid language model.
Tensor names are written out here from the checkpoint layout itself, not derived from any
loader, so tests that load this folder check the loader against the layout.

    python -m tools.make_tiny_nano_vl OUT_DIR [--seed 0] [--dtype bfloat16]

Nothing is downloaded: the tokenizer is a byte-level BPE trained on a few sentences.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch
from safetensors.torch import save_file

ARCHITECTURE = "NemotronH_Nano_VL_V2"
IMAGE_START, IMAGE_CONTEXT, IMAGE_END = "<img>", "<image>", "</img>"
TURN_START, TURN_END = "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", TURN_START, TURN_END, IMAGE_START, IMAGE_END, IMAGE_CONTEXT]

# A ChatML-style template for the tiny folder only.
# NOTE: the real Nano-VL-v2 folders ship their own template, which the loader renders as given.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

TILE_SIZE = 64
PATCH_SIZE = 16
VIT_NAME = "vit_tiny_patch16_224"  # timm: 12 blocks, width 192, 3 heads, MLP ratio 4
VIT_DEPTH, VIT_WIDTH = 12, 192
PREFIX_TOKENS = 8  # class token plus registers, as in the 12B checkpoint
CPE_MAX_SIZE = 256  # position embedding grid of 16x16 patches, interpolated to 4x4 per tile
PROJECTOR_HIDDEN = 96
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

LLM_CONFIG = {
    "architectures": ["NemotronHForCausalLM"],
    "model_type": "nemotron_h",
    "vocab_size": 512,
    "hidden_size": 64,
    "hybrid_override_pattern": "M-*M-",
    "num_hidden_layers": 5,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "intermediate_size": 128,
    "mamba_num_heads": 4,
    "mamba_head_dim": 32,
    "ssm_state_size": 16,
    "n_groups": 2,
    "conv_kernel": 4,
    "chunk_size": 16,
    "layer_norm_epsilon": 1e-5,
    "tie_word_embeddings": False,
    "use_conv_bias": True,
    "use_bias": False,
    "mamba_hidden_act": "silu",
    "mlp_hidden_act": "relu2",
    "attention_bias": False,
    "residual_in_fp32": False,
    "time_step_min": 0.001,
    "torch_dtype": "bfloat16",
}


def nano_vl_config(image_context_id: int, dtype: str) -> dict:
    """Top-level `config.json` with the keys of a Nano-VL-v2 folder."""
    return {
        "architectures": [ARCHITECTURE],
        "model_type": ARCHITECTURE,
        "torch_dtype": dtype,
        "llm_config": {**LLM_CONFIG, "torch_dtype": dtype},
        "vision_config": {
            "architectures": ["RADIOModel"],
            "args": {"model": VIT_NAME, "cpe_max_size": CPE_MAX_SIZE, "register_multiple": PREFIX_TOKENS},
            "patch_size": PATCH_SIZE,
            "max_resolution": CPE_MAX_SIZE,
            "preferred_resolution": [TILE_SIZE, TILE_SIZE],
        },
        "force_image_size": TILE_SIZE,
        "patch_size": PATCH_SIZE,
        "downsample_ratio": 0.5,
        "ps_version": "v2",
        "image_tag_type": "internvl",
        "img_context_token": IMAGE_CONTEXT,
        "img_start_token": IMAGE_START,
        "img_end_token": IMAGE_END,
        "img_context_token_id": image_context_id,
        "vit_hidden_size": VIT_WIDTH,
        "projector_hidden_size": PROJECTOR_HIDDEN,
        "norm_mean": CLIP_MEAN,
        "norm_std": CLIP_STD,
        "use_thumbnail": True,
        "template": "nemotron_h",
    }


def language_model_shapes(llm: dict) -> dict[str, tuple[int, ...]]:
    """Checkpoint names and shapes of the language model, under `language_model.`."""
    width, vocab = llm["hidden_size"], llm["vocab_size"]
    heads, head_dim = llm["mamba_num_heads"], llm["mamba_head_dim"]
    d_inner = heads * head_dim
    conv_dim = d_inner + 2 * llm["n_groups"] * llm["ssm_state_size"]
    q_size = llm["num_attention_heads"] * llm["head_dim"]
    kv_size = llm["num_key_value_heads"] * llm["head_dim"]
    shapes = {"language_model.backbone.embeddings.weight": (vocab, width)}
    for index, letter in enumerate(llm["hybrid_override_pattern"]):
        prefix = f"language_model.backbone.layers.{index}."
        shapes[prefix + "norm.weight"] = (width,)
        if letter == "M":
            shapes.update({
                prefix + "mixer.in_proj.weight": (d_inner + conv_dim + heads, width),  # z, xBC, dt
                prefix + "mixer.conv1d.weight": (conv_dim, 1, llm["conv_kernel"]),
                prefix + "mixer.conv1d.bias": (conv_dim,),
                prefix + "mixer.dt_bias": (heads,),
                prefix + "mixer.A_log": (heads,),
                prefix + "mixer.D": (heads,),
                prefix + "mixer.norm.weight": (d_inner,),
                prefix + "mixer.out_proj.weight": (width, d_inner),
            })
        elif letter == "*":
            shapes.update({
                prefix + "mixer.q_proj.weight": (q_size, width),
                prefix + "mixer.k_proj.weight": (kv_size, width),
                prefix + "mixer.v_proj.weight": (kv_size, width),
                prefix + "mixer.o_proj.weight": (width, q_size),
            })
        else:
            shapes.update({
                prefix + "mixer.up_proj.weight": (llm["intermediate_size"], width),
                prefix + "mixer.down_proj.weight": (width, llm["intermediate_size"]),
            })
    shapes["language_model.backbone.norm_f.weight"] = (width,)
    shapes["language_model.lm_head.weight"] = (vocab, width)
    return shapes


def vision_shapes(llm_width: int) -> dict[str, tuple[int, ...]]:
    """Checkpoint names and shapes of the RADIO ViT (`vision_model.radio_model.`) and `mlp1`."""
    width = VIT_WIDTH
    positions = (CPE_MAX_SIZE // PATCH_SIZE) ** 2
    generator = "vision_model.radio_model.model.patch_generator."
    shapes = {
        generator + "embedder.weight": (width, 3 * PATCH_SIZE * PATCH_SIZE),
        generator + "pos_embed": (1, positions, width),
        generator + "cls_token.token": (PREFIX_TOKENS, width),
    }
    for index in range(VIT_DEPTH):
        prefix = f"vision_model.radio_model.model.blocks.{index}."
        shapes.update({
            prefix + "norm1.weight": (width,),
            prefix + "norm1.bias": (width,),
            prefix + "attn.qkv.weight": (3 * width, width),
            prefix + "attn.qkv.bias": (3 * width,),
            prefix + "attn.proj.weight": (width, width),
            prefix + "attn.proj.bias": (width,),
            prefix + "norm2.weight": (width,),
            prefix + "norm2.bias": (width,),
            prefix + "mlp.fc1.weight": (4 * width, width),
            prefix + "mlp.fc1.bias": (4 * width,),
            prefix + "mlp.fc2.weight": (width, 4 * width),
            prefix + "mlp.fc2.bias": (width,),
        })
    shapes.update({
        "vision_model.radio_model.input_conditioner.norm_mean": (3, 1, 1),
        "vision_model.radio_model.input_conditioner.norm_std": (3, 1, 1),
        "mlp1.0.weight": (4 * width,),
        "mlp1.1.weight": (PROJECTOR_HIDDEN, 4 * width),
        "mlp1.3.weight": (llm_width, PROJECTOR_HIDDEN),
    })
    return shapes


def random_tensor(name: str, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """Values of a trained-looking scale: norms near 1, A_log and dt_bias in Mamba's ranges."""
    noise = torch.randn(shape, generator=generator)
    if name.endswith("input_conditioner.norm_mean"):
        return torch.tensor(CLIP_MEAN).view(shape)
    if name.endswith("input_conditioner.norm_std"):
        return torch.tensor(CLIP_STD).view(shape)
    if name.endswith(("norm.weight", "norm_f.weight", "norm1.weight", "norm2.weight", "mlp1.0.weight")):
        return 1.0 + 0.1 * noise
    if name.endswith("A_log"):
        return torch.log(torch.rand(shape, generator=generator) * 15 + 1)  # A in -16..-1
    if name.endswith("dt_bias"):
        return -3.0 + 0.5 * noise  # softplus gives dt around 0.05
    if name.endswith(".D"):
        return 1.0 + 0.1 * noise
    fan_in = shape[-1] if len(shape) > 1 else 1
    scale = 0.02 if len(shape) == 1 or "embed" in name or "cls_token" in name else 1.0 / math.sqrt(fan_in)
    return scale * noise


def write_tokenizer(folder: Path) -> dict[str, int]:
    """Train a byte-level BPE on a few sentences and write the transformers tokenizer files."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    corpus = [
        "click the submit button", "type hello world into the search field", "scroll down the page",
        '{"action": "click", "x": 512, "y": 300}', "pyautogui.click(x=0.5, y=0.25)", "done(success)",
        "open the settings menu and press enter", "user assistant system", "0123456789 ,.:;()[]{}\"'",
    ]
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(corpus, trainer)
    tokenizer.save(str(folder / "tokenizer.json"))
    special_map = {"bos_token": "<s>", "eos_token": TURN_END, "unk_token": "<unk>", "pad_token": "<unk>"}
    (folder / "special_tokens_map.json").write_text(json.dumps(special_map, indent=2) + "\n")
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "chat_template": CHAT_TEMPLATE,
        "model_max_length": 131072,
        **special_map,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2) + "\n")
    return {token: tokenizer.token_to_id(token) for token in SPECIAL_TOKENS}


def write_tiny_nano_vl(folder: str | Path, seed: int = 0, dtype: str = "bfloat16") -> Path:
    """Write the tiny checkpoint folder (created if needed) and return its path."""
    torch_dtype = {"bfloat16": torch.bfloat16, "float32": torch.float32, "float16": torch.float16}[dtype]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    special_ids = write_tokenizer(folder)
    if max(special_ids.values()) >= LLM_CONFIG["vocab_size"]:
        raise RuntimeError(f"tokenizer ids {special_ids} do not fit the vocabulary of {LLM_CONFIG['vocab_size']}")
    config = nano_vl_config(special_ids[IMAGE_CONTEXT], dtype)
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")

    generator = torch.Generator().manual_seed(seed)
    language = language_model_shapes(LLM_CONFIG)
    vision = vision_shapes(LLM_CONFIG["hidden_size"])
    language_names = list(language)
    half = len(language_names) // 2
    # Three shards: the first half of the language model, the rest of it, the image path.
    shards = [
        {name: language[name] for name in language_names[:half]},
        {name: language[name] for name in language_names[half:]},
        vision,
    ]
    weight_map: dict[str, str] = {}
    total_size = 0
    for number, shapes in enumerate(shards, start=1):
        shard_name = f"model-{number:05d}-of-{len(shards):05d}.safetensors"
        tensors = {name: random_tensor(name, shape, generator).to(torch_dtype).contiguous() for name, shape in shapes.items()}
        if number == len(shards):
            tensors["vision_model.radio_model.summary_idxs"] = torch.tensor([0, 1], dtype=torch.int64)
        save_file(tensors, str(folder / shard_name), metadata={"format": "pt"})
        for name, tensor in tensors.items():
            weight_map[name] = shard_name
            total_size += tensor.numel() * tensor.element_size()
    index = {"metadata": {"total_size": total_size}, "weight_map": dict(sorted(weight_map.items()))}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="output folder (created if needed)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32", "float16"], help="weight dtype")
    args = parser.parse_args(argv)
    print(write_tiny_nano_vl(args.folder, args.seed, args.dtype))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
