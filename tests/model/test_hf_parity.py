"""Our language model against transformers' NemotronHForCausalLM with the same weights."""

import pytest
import torch

transformers = pytest.importorskip("transformers")

from model.checkpoint import config_from_nemotron_h  # noqa: E402
from model.hybrid import HoldfastModel  # noqa: E402
from model.session import Session  # noqa: E402


@pytest.fixture(scope="module")
def twin_models():
    torch.manual_seed(0)
    hf_config = transformers.NemotronHConfig(
        vocab_size=272, hidden_size=64, hybrid_override_pattern="M-*M-M*-",
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, intermediate_size=128,
        mamba_num_heads=4, mamba_head_dim=32, ssm_state_size=16, n_groups=2, conv_kernel=4,
        chunk_size=16, layer_norm_epsilon=1e-5,
    )
    reference = transformers.NemotronHForCausalLM(hf_config).eval()
    # Move every parameter off its initial value (D = 1, dt_bias = 1, norm weights = 1...) so
    # that a term used with the wrong sign or in the wrong place cannot hide.
    with torch.no_grad():
        for parameter in reference.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    ours = HoldfastModel(config_from_nemotron_h(hf_config.to_dict())).eval()
    renamed = {("backbone." + k[len("model."):] if k.startswith("model.") else k): v for k, v in reference.state_dict().items()}
    ours.load_state_dict(renamed)
    return reference, ours


def test_prefill_logits_match_transformers(twin_models):
    reference, ours = twin_models
    ids = torch.randint(0, 272, (2, 45), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = reference(input_ids=ids).logits
        actual = ours(input_ids=ids)
    torch.testing.assert_close(actual, expected, atol=1e-4, rtol=1e-4)


def test_decode_logits_match_transformers(twin_models):
    reference, ours = twin_models
    generator = torch.Generator().manual_seed(2)
    prompt = torch.randint(0, 272, (1, 30), generator=generator)
    session = Session(ours)
    with torch.no_grad():
        output = reference(input_ids=prompt, use_cache=True)
        cache = output.cache
        torch.testing.assert_close(session.feed_tokens(prompt[0]), output.logits[:, -1], atol=1e-4, rtol=1e-4)
        for _ in range(8):
            token = torch.randint(0, 272, (1, 1), generator=generator)
            output = reference(input_ids=token, cache=cache, use_cache=True)
            cache = output.cache
            torch.testing.assert_close(session.feed_tokens(token), output.logits[:, -1], atol=1e-4, rtol=1e-4)
