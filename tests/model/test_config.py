import pytest
import torch
from pydantic import ValidationError

from model.config import ModelConfig, get_preset, preset_names
from model.hybrid import HoldfastModel


def tiny_fields(**changes):
    fields = get_preset("tiny").model_dump()
    fields.update(changes)
    return fields


def test_unknown_pattern_letter_is_named():
    with pytest.raises(ValidationError, match=r"unknown layer letters \['A'\]"):
        ModelConfig(**tiny_fields(pattern="M-A"))


def test_kv_heads_must_divide_heads():
    with pytest.raises(ValidationError, match="kv_heads=3 does not divide attention_heads=4"):
        ModelConfig(**tiny_fields(kv_heads=3))


def test_groups_must_divide_mamba_heads():
    with pytest.raises(ValidationError, match="n_groups=3 does not divide mamba_heads=4"):
        ModelConfig(**tiny_fields(n_groups=3))


def test_image_size_must_fit_patches():
    vision = get_preset("tiny").vision.model_dump()
    vision["image_width"] = 60
    with pytest.raises(ValidationError, match="image_width=60 is not a multiple of patch_size=8"):
        ModelConfig(**tiny_fields(vision=vision))


def test_transformer_twin_replaces_mamba_with_attention():
    hybrid = get_preset("small-bench")
    twin = get_preset("small-bench-transformer")
    assert twin.pattern == hybrid.pattern.replace("M", "*")
    assert twin.rope and twin.attention_window is None
    assert twin.hidden_size == hybrid.hidden_size and len(twin.pattern) == len(hybrid.pattern)


def test_tiny_is_under_a_million_parameters():
    assert HoldfastModel(get_preset("tiny")).num_parameters() < 1_000_000


@pytest.mark.parametrize("name", ["practice", "small-bench", "nano-12b"])
def test_presets_build_on_meta_device(name):
    with torch.device("meta"):
        model = HoldfastModel(get_preset(name))
    assert model.num_parameters() > 0


def test_small_bench_size_is_in_range():
    with torch.device("meta"):
        count = HoldfastModel(get_preset("small-bench")).num_parameters("language")
    assert 30e6 <= count <= 60e6


def test_nano_12b_language_model_is_about_12b():
    with torch.device("meta"):
        count = HoldfastModel(get_preset("nano-12b")).num_parameters("language")
    assert 11e9 < count < 13.5e9


def test_every_preset_name_resolves():
    for name in preset_names():
        assert get_preset(name).name == name
