import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from model.checkpoint import CheckpointError, build_model, load_model, save_model
from model.config import get_preset
from model.hybrid import HoldfastModel


@pytest.fixture
def saved_tiny(tmp_path):
    torch.manual_seed(0)
    model = HoldfastModel(get_preset("tiny")).eval()
    folder = save_model(model, tmp_path / "tiny")
    return model, folder


def test_round_trip_gives_same_logits(saved_tiny):
    model, folder = saved_tiny
    loaded = load_model(folder)
    ids = torch.randint(0, 256, (1, 12))
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids), model(input_ids=ids))


def test_names_follow_nemotron_h_layout(saved_tiny):
    _, folder = saved_tiny
    names = set(load_file(folder / "model.safetensors"))
    assert "backbone.embeddings.weight" in names
    assert "backbone.layers.0.mixer.A_log" in names
    assert "backbone.layers.0.mixer.in_proj.weight" in names
    assert "backbone.layers.2.mixer.q_proj.weight" in names
    assert "backbone.layers.1.mixer.up_proj.weight" in names
    assert "backbone.norm_f.weight" in names
    assert "lm_head.weight" in names
    assert "mlp1.1.weight" in names


def rewrite_weights(folder, change):
    tensors = load_file(folder / "model.safetensors")
    change(tensors)
    save_file(tensors, str(folder / "model.safetensors"))


def test_missing_tensor_is_named(saved_tiny):
    _, folder = saved_tiny
    rewrite_weights(folder, lambda t: t.pop("backbone.layers.0.mixer.D"))
    with pytest.raises(CheckpointError, match=r"model\.safetensors: missing tensors backbone\.layers\.0\.mixer\.D"):
        load_model(folder)


def test_unexpected_tensor_is_named(saved_tiny):
    _, folder = saved_tiny
    rewrite_weights(folder, lambda t: t.update({"backbone.layers.0.mixer.extra": torch.zeros(2)}))
    with pytest.raises(CheckpointError, match="unexpected tensor 'backbone.layers.0.mixer.extra'"):
        load_model(folder)


def test_wrong_shape_is_named(saved_tiny):
    _, folder = saved_tiny
    rewrite_weights(folder, lambda t: t.update({"backbone.norm_f.weight": torch.ones(65)}))
    with pytest.raises(CheckpointError, match=r"'backbone.norm_f.weight' has shape \(65,\), the model expects \(64,\)"):
        load_model(folder)


def test_wrong_dtype_is_named(saved_tiny):
    _, folder = saved_tiny
    rewrite_weights(folder, lambda t: t.update({"lm_head.weight": t["lm_head.weight"].to(torch.bfloat16)}))
    with pytest.raises(CheckpointError, match="'lm_head.weight' has dtype torch.bfloat16"):
        load_model(folder)


def test_truncated_file_is_reported(saved_tiny):
    _, folder = saved_tiny
    path = folder / "model.safetensors"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_model(folder)


def test_unsupported_architecture_is_reported(saved_tiny):
    _, folder = saved_tiny
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(CheckpointError, match="model_type 'llama' is not supported"):
        load_model(folder)


def test_invalid_config_names_file(saved_tiny):
    _, folder = saved_tiny
    config = json.loads((folder / "config.json").read_text())
    config["holdfast"]["pattern"] = "MX*"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"(?s)config.json: invalid model configuration.*unknown layer letters \['X'\]"):
        load_model(folder)


def test_nemotron_h_prefix_loads(tmp_path, saved_tiny):
    model, folder = saved_tiny
    tensors = load_file(folder / "model.safetensors")
    renamed = {("model." + k[len("backbone."):] if k.startswith("backbone.") else k): v for k, v in tensors.items()}
    save_file(renamed, str(folder / "model.safetensors"))
    loaded = load_model(folder)
    torch.testing.assert_close(loaded.backbone.norm_f.weight, model.backbone.norm_f.weight)


def test_unknown_preset_lists_choices():
    with pytest.raises(CheckpointError, match="presets: tiny, tiny-transformer"):
        build_model("not-a-model")
