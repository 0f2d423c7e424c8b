"""Nano-VL-v2 folders: a tiny random checkpoint in the published layout, loaded and run.

The references are transformers' own classes loaded from the same tensors through their own
weight renaming: NemotronHForCausalLM for the language model, RadioModel for the vision tower.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

transformers = pytest.importorskip("transformers")

from agent.actions import Click  # noqa: E402
from model.checkpoint import CheckpointError  # noqa: E402
from model.nano_vl import (  # noqa: E402
    INDEX_FILE,
    NanoVLConfig,
    NanoVLModel,
    NanoVLPolicy,
    load_nano_vl,
    load_nano_vl_policy,
)
from model.policy import load_policy  # noqa: E402
from model.tiling import image_to_tiles  # noqa: E402
from tools.make_tiny_nano_vl import write_tiny_nano_vl  # noqa: E402

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
VISION_SHARD = "model-00003-of-00003.safetensors"


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    return write_tiny_nano_vl(tmp_path_factory.mktemp("nano") / "tiny-nano-vl")


@pytest.fixture(scope="module")
def tiny_model(tiny_folder) -> NanoVLModel:
    return load_nano_vl(tiny_folder, dtype=torch.float32)


def read_all_tensors(folder: Path) -> dict[str, torch.Tensor]:
    tensors = {}
    for shard in sorted(folder.glob("model-*.safetensors")):
        tensors.update(load_file(str(shard)))
    return tensors


def copy_folder(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def rewrite_shard(folder: Path, shard: str, change) -> None:
    """Apply change(tensors) to one shard and keep the index in step with it."""
    tensors = load_file(str(folder / shard))
    change(tensors)
    save_file(tensors, str(folder / shard), metadata={"format": "pt"})
    index_path = folder / INDEX_FILE
    index = json.loads(index_path.read_text())
    index["weight_map"] = {name: owner for name, owner in index["weight_map"].items() if owner != shard}
    index["weight_map"].update({name: shard for name in tensors})
    index_path.write_text(json.dumps(index))


# Loading -------------------------------------------------------------------------------------


def test_tiny_folder_layout(tiny_folder):
    config = json.loads((tiny_folder / "config.json").read_text())
    assert config["architectures"] == ["NemotronH_Nano_VL_V2"]
    assert {"llm_config", "vision_config", "img_context_token_id", "projector_hidden_size"} <= set(config)
    index = json.loads((tiny_folder / INDEX_FILE).read_text())
    assert len(set(index["weight_map"].values())) >= 2
    assert "vision_model.radio_model.model.blocks.11.attn.qkv.weight" in index["weight_map"]
    assert "language_model.backbone.layers.0.mixer.A_log" in index["weight_map"]
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        assert (tiny_folder / name).is_file()


def test_loads_in_checkpoint_dtype(tiny_folder):
    model = load_nano_vl(tiny_folder)
    assert model.dtype == torch.bfloat16
    assert model.vision_model.embeddings.patch_projection.weight.dtype == torch.bfloat16
    assert not any(parameter.is_meta for parameter in model.parameters())
    # Sizes read from the shard headers: 8 prefix tokens, a 16x16 position table (256 / 16).
    assert model.config.prefix_tokens == 8
    assert model.config.position_grid == 16


def test_progress_reports_every_byte(tiny_folder):
    calls = []
    load_nano_vl(tiny_folder, progress=lambda done, total: calls.append((done, total)))
    tensor_bytes = sum(t.numel() * t.element_size() for t in read_all_tensors(tiny_folder).values())
    assert calls[-1][0] == tensor_bytes
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)


# Parity with transformers ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference_language_model(tiny_folder, tmp_path_factory):
    folder = tmp_path_factory.mktemp("reference-lm")
    tensors = read_all_tensors(tiny_folder)
    language = {name.removeprefix("language_model."): t for name, t in tensors.items() if name.startswith("language_model.")}
    save_file(language, str(folder / "model.safetensors"), metadata={"format": "pt"})
    llm_config = json.loads((tiny_folder / "config.json").read_text())["llm_config"]
    (folder / "config.json").write_text(json.dumps(llm_config))
    return transformers.NemotronHForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def reference_vision_model(tiny_folder, tmp_path_factory):
    folder = tmp_path_factory.mktemp("reference-vit")
    tensors = read_all_tensors(tiny_folder)
    vision = {name.removeprefix("vision_model."): t for name, t in tensors.items() if name.startswith("vision_model.")}
    save_file(vision, str(folder / "model.safetensors"), metadata={"format": "pt"})
    # vit_tiny_patch16_224 sizes written out by hand; 8 prefix tokens, position table for 256 pixels.
    config = transformers.RadioConfig(
        hidden_size=192, num_hidden_layers=12, num_attention_heads=3, patch_size=16, image_size=64,
        max_img_size=256, num_cls_tokens=8, num_registers=0,
    )
    config.save_pretrained(str(folder))
    reference = transformers.RadioModel.from_pretrained(str(folder), dtype=torch.float32).eval()
    reference.make_preprocessor_external()
    return reference


def test_language_logits_match_transformers(tiny_model, reference_language_model):
    ids = torch.randint(0, 512, (2, 37), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = reference_language_model(input_ids=ids).logits
        actual = tiny_model.language_model(input_ids=ids)
    torch.testing.assert_close(actual, expected, atol=1e-4, rtol=1e-4)


def screenshot_tiles(size=(1280, 720)) -> torch.Tensor:
    generator = torch.Generator().manual_seed(4)
    noise = (torch.rand(size[1], size[0], 3, generator=generator) * 255).to(torch.uint8)
    image = Image.fromarray(noise.numpy())
    pixels, _ = image_to_tiles(image, CLIP_MEAN, CLIP_STD, tile_size=64)
    return pixels


def test_vision_features_match_radio_model(tiny_model, reference_vision_model):
    pixels = screenshot_tiles()
    with torch.no_grad():
        expected = reference_vision_model(pixel_values=pixels).features
        actual = tiny_model.vision_features(pixels)
    assert actual.shape == (pixels.shape[0], 16, 192)  # 4x4 patches per 64-pixel tile, prefix dropped
    torch.testing.assert_close(actual, expected, atol=1e-4, rtol=1e-4)


def test_image_embeddings_match_hand_projection(tiny_model, reference_vision_model, tiny_folder):
    pixels = screenshot_tiles()
    tensors = {name: t.float() for name, t in read_all_tensors(tiny_folder).items() if name.startswith("mlp1.")}
    with torch.no_grad():
        features = reference_vision_model(pixel_values=pixels).features.view(-1, 4, 4, 192)  # (T, rows, cols, C)
        # Pixel shuffle v2 written out: token (r, c) is patches (2r,2c), (2r,2c+1), (2r+1,2c), (2r+1,2c+1).
        tokens = torch.stack([
            torch.cat([features[:, 2 * r, 2 * c], features[:, 2 * r, 2 * c + 1],
                       features[:, 2 * r + 1, 2 * c], features[:, 2 * r + 1, 2 * c + 1]], dim=-1)
            for r in range(2) for c in range(2)
        ], dim=1)  # (T, 4, 768)
        normed = tokens * torch.rsqrt(tokens.pow(2).mean(-1, keepdim=True) + 1e-5) * tensors["mlp1.0.weight"]
        hidden = torch.relu(normed @ tensors["mlp1.1.weight"].T) ** 2
        expected = (hidden @ tensors["mlp1.3.weight"].T).reshape(-1, 64)
        actual = tiny_model.encode_tiles(pixels)
    torch.testing.assert_close(actual, expected, atol=1e-4, rtol=1e-4)


# Loading errors --------------------------------------------------------------------------------


def test_missing_tensor_named(tiny_folder, tmp_path):
    folder = copy_folder(tiny_folder, tmp_path / "broken")
    rewrite_shard(folder, VISION_SHARD, lambda tensors: tensors.pop("mlp1.3.weight"))
    with pytest.raises(CheckpointError, match=r"missing tensors 'mlp1\.3\.weight'; not found in any shard \(model-00001"):
        load_nano_vl(folder)


def test_missing_from_listed_shard_named(tiny_folder, tmp_path):
    folder = copy_folder(tiny_folder, tmp_path / "broken")
    tensors = load_file(str(folder / VISION_SHARD))
    tensors.pop("mlp1.1.weight")
    save_file(tensors, str(folder / VISION_SHARD), metadata={"format": "pt"})  # the index still lists it
    with pytest.raises(CheckpointError, match=rf"missing tensor 'mlp1\.1\.weight', which .* places in shard '{VISION_SHARD}'"):
        load_nano_vl(folder)


def test_unexpected_tensor_named(tiny_folder, tmp_path):
    folder = copy_folder(tiny_folder, tmp_path / "broken")
    name = "vision_model.radio_model.model.blocks.0.attn.extra_scale"
    rewrite_shard(folder, VISION_SHARD, lambda tensors: tensors.update({name: torch.zeros(3)}))
    with pytest.raises(CheckpointError, match=rf"unexpected tensor '{name}' in shard '{VISION_SHARD}'"):
        load_nano_vl(folder)


def test_misshaped_tensor_named(tiny_folder, tmp_path):
    folder = copy_folder(tiny_folder, tmp_path / "broken")
    name = "vision_model.radio_model.model.blocks.3.attn.qkv.weight"
    rewrite_shard(folder, VISION_SHARD, lambda tensors: tensors.update({name: torch.zeros(570, 192)}))
    with pytest.raises(
        CheckpointError, match=rf"tensor '{name}' in shard '{VISION_SHARD}' has shape \(570, 192\).* expects \(576, 192\)"
    ):
        load_nano_vl(folder)


def test_missing_shard_file_named(tiny_folder, tmp_path):
    folder = copy_folder(tiny_folder, tmp_path / "broken")
    (folder / "model-00002-of-00003.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"model-00002-of-00003\.safetensors: missing; .* lists shard"):
        load_nano_vl(folder)


def test_unsupported_architecture_lists_supported(tiny_folder, tmp_path):
    folder = copy_folder(tiny_folder, tmp_path / "other")
    config = json.loads((folder / "config.json").read_text())
    config["architectures"] = ["LlavaForConditionalGeneration"]
    config["model_type"] = "llava"
    (folder / "config.json").write_text(json.dumps(config))
    expected = r"architecture \['LlavaForConditionalGeneration'\] is not supported; supported architectures: HoldfastModel, NemotronHForCausalLM, NemotronH_Nano_VL_V2"
    with pytest.raises(CheckpointError, match=expected):
        load_nano_vl(folder)
    with pytest.raises(CheckpointError, match=expected):
        load_policy(str(folder))


def test_unknown_vit_variant_lists_supported(tiny_folder, tmp_path):
    folder = copy_folder(tiny_folder, tmp_path / "other")
    config = json.loads((folder / "config.json").read_text())
    config["vision_config"]["args"]["model"] = "vit_giant_patch14_224"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"'vit_giant_patch14_224'; supported ViT variants: vit_huge_patch16_224"):
        load_nano_vl(folder)


# The policy ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_policy(tiny_folder) -> NanoVLPolicy:
    return load_nano_vl_policy(tiny_folder, action_format="json", dtype=torch.float32)


def test_image_span_prompt(tiny_policy):
    embeds, grid = tiny_policy.image_span(Image.new("RGB", (800, 1280), (10, 200, 30)))
    # 64-pixel tiles, 800x1280 (aspect 0.625): 2/3 is closest, so 2x3 tiles + thumbnail = 7 tiles,
    # each (64 / 16 / 2) ** 2 = 4 tokens: 28 image tokens between <img> and </img>.
    assert (grid.cols, grid.rows, grid.num_tiles) == (2, 3, 7)
    start, end = tiny_policy.image_start_ids, tiny_policy.image_end_ids
    assert embeds.shape == (len(start) + 28 + len(end), 64)
    token_embeddings = tiny_policy.model.language_model.backbone.embeddings.weight
    torch.testing.assert_close(embeds[0], token_embeddings[start[0]])
    torch.testing.assert_close(embeds[-1], token_embeddings[end[-1]])


def test_chat_template_pieces(tiny_policy):
    pieces = tiny_policy.pieces
    assert pieces.prefix == "<|im_start|>user\n"
    assert pieces.generation == "<|im_end|>\n<|im_start|>assistant\n"
    assert pieces.next_user == "<|im_end|>\n<|im_start|>user\n"
    assert tiny_policy.stop_id == tiny_policy.tokenizer.convert_tokens_to_ids("<|im_end|>")


def test_predict_without_commit_keeps_history(tiny_policy):
    tiny_policy.start("open the settings")
    tiny_policy.observe(Image.new("RGB", (640, 400), (255, 255, 255)))
    before = tiny_policy.session.last_logits.clone()
    seen = tiny_policy.session.tokens_seen
    tiny_policy.predict(commit=False)
    assert tiny_policy.session.tokens_seen == seen
    torch.testing.assert_close(tiny_policy.session.last_logits, before)
    tiny_policy.feed_action("click(0.500,0.250)")
    # The action is fed in the model's format, {"action": "click", "x": 500, "y": 250}, then the stop token.
    fed = tiny_policy.tokenizer.encode('{"action": "click", "x": 500, "y": 250}', add_special_tokens=False)
    assert tiny_policy.session.tokens_seen == seen + len(fed) + 1


def test_model_text_translated_to_holdfast(tiny_policy):
    assert tiny_policy._to_holdfast('{"action": "click", "x": 500, "y": 250}') == "click(0.500,0.250)"
    assert tiny_policy.last_parse_error is None
    assert tiny_policy._to_holdfast("nonsense") == "nonsense"
    assert "expected a JSON object" in tiny_policy.last_parse_error


def test_folder_settings_choose_format(tiny_folder, tmp_path):
    folder = copy_folder(tiny_folder, tmp_path / "with-settings")
    (folder / "holdfast.json").write_text(json.dumps({"action_format": "pyautogui", "max_num_tiles": 2}))
    policy = load_policy(str(folder))
    assert isinstance(policy, NanoVLPolicy)
    assert policy.action_format.name == "pyautogui"
    assert policy.max_num_tiles == 2
    assert policy.action_format.parse(policy.action_format.format(Click(x=0.5, y=0.5))) == Click(x=0.5, y=0.5)
    assert load_policy(str(folder), action_format="holdfast").action_format.name == "holdfast"


@pytest.mark.desktop
def test_dry_run_step_in_agent_loop(tiny_folder, xvfb_display, tmp_path):
    from agent.executor import Executor
    from agent.loop import run_agent
    from agent.screen import ScreenCapture
    from agent.trajectory import load_trajectory, new_task_info, TrajectoryRecorder

    policy = load_policy(str(tiny_folder))
    with ScreenCapture() as screen:
        geometry = screen.geometry()
        recorder = TrajectoryRecorder(tmp_path / "run", new_task_info("open the menu", geometry.size, policy.name))
        result = run_agent(
            "open the menu", policy, screen, Executor(geometry, dry_run=True), recorder, max_steps=2, max_failures=2
        )
    trajectory = load_trajectory(tmp_path / "run")
    assert result.steps == 2
    assert len(trajectory.steps) == 2
    # Random weights write noise, which the loop records as unparseable without running anything.
    assert all(report.outcome in ("unparseable", "dry_run") for report in result.reports)
    assert all(report.state_bytes > 0 for report in result.reports)
    # The Xvfb screen is 1280x800 (aspect 1.6): 64-pixel tiles in a 3x2 grid + thumbnail = 7 tiles.
    assert (policy.last_grid.cols, policy.last_grid.rows, policy.last_grid.num_tiles) == (3, 2, 7)


# Analytic sizes --------------------------------------------------------------------------------


def nano_12b_config() -> NanoVLConfig:
    from model.config import get_preset

    # The published sizes: ViT-H (32 blocks, width 1280, 16 heads), 128x128 position table,
    # 8 prefix tokens, 512-pixel tiles, projector 20480 wide; no attention window.
    language = get_preset("nano-12b").model_copy(update={"vision": None, "attention_window": None})
    return NanoVLConfig(
        language=language, vit_name="vit_huge_patch16_224", vit_depth=32, vit_width=1280, vit_heads=16,
        vit_mlp_ratio=4.0, position_grid=128, prefix_tokens=8, summary_tokens=3, patch_size=16, tile_size=512,
        downsample_ratio=0.5, projector_hidden=20480, norm_mean=CLIP_MEAN, norm_std=CLIP_STD, use_thumbnail=True,
        img_start_token="<img>", img_end_token="</img>", img_context_token="<image>", img_context_token_id=None,
        dtype=torch.bfloat16,
    )


@pytest.fixture(scope="module")
def meta_nano_12b() -> NanoVLModel:
    with torch.device("meta"):
        return NanoVLModel(nano_12b_config())


def test_analytic_language_parameters_agree(meta_nano_12b):
    from eval.analytic import analytic_report
    from model.config import get_preset

    report = analytic_report(get_preset("nano-12b"), gpu_bytes=141 * 10**9, history_steps=8, image_tokens=256, action_tokens=20)
    assert report["models"]["hybrid-full"]["language_parameters"] == meta_nano_12b.language_model.num_parameters()


def test_analytic_state_sizes_agree(meta_nano_12b):
    from eval.analytic import kv_bytes_per_token, session_memory

    language = meta_nano_12b.language_model
    state = language.new_state(1, dtype=torch.bfloat16)
    memory = session_memory(language.config, steps=1, step_tokens=1, dtype="bfloat16")
    ssm = sum(layer.ssm.nbytes for layer in state.layers if hasattr(layer, "ssm"))
    conv = sum(layer.conv.nbytes for layer in state.layers if hasattr(layer, "conv"))
    kv_per_token = sum(layer.k[:, :, :1].nbytes + layer.v[:, :, :1].nbytes for layer in state.layers if hasattr(layer, "k"))
    assert memory.ssm_bytes == ssm
    assert memory.conv_bytes == conv
    assert kv_bytes_per_token(language.config, "bfloat16") == kv_per_token
    # Hand check: 28 Mamba layers x 128 heads x 80 x 128 x 4 bytes = 146,800,640 bytes (140 MiB);
    # 6 attention layers x 2 x 8 heads x 128 x 2 bytes = 24,576 bytes (24 KiB) per token.
    assert ssm == 146_800_640
    assert kv_per_token == 24_576


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="transformers' RadioModel adds two LayerScale vectors per block (2 x 1280 x 32 = 81,920 "
    "parameters) that the analytic count, like Holdfast's own ViT, leaves out",
)
def test_analytic_vision_parameters_agree(meta_nano_12b):
    from eval.analytic import vision_parameters
    from model.config import get_preset

    actual = sum(p.numel() for name, p in meta_nano_12b.named_parameters() if not name.startswith("language_model."))
    assert vision_parameters(get_preset("nano-12b").vision, 5120) == actual
