import pytest
import torch
from PIL import Image

from model.config import get_preset
from model.hybrid import HoldfastModel
from model.session import Session


def make_model(preset="tiny", window="preset", seed=0):
    config = get_preset(preset)
    if window != "preset":
        config = config.with_window(window)
    torch.manual_seed(seed)
    return HoldfastModel(config).eval()


def token_ids(length, seed=0):
    return torch.randint(0, 256, (1, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("window", [None, 8, 24])
def test_prefill_stepwise_and_pieces_agree(window):
    model = make_model(window=window)
    ids = token_ids(70)
    with torch.no_grad():
        whole = model(input_ids=ids)  # (1, 70, V): one pass with the band mask

    stepwise_session = Session(model)
    stepwise = torch.stack([stepwise_session.feed_tokens(ids[:, t:t + 1]) for t in range(70)], dim=1)

    pieces_session = Session(model)
    last_of_pieces = []
    for start, end in [(0, 5), (5, 6), (6, 33), (33, 70)]:
        last_of_pieces.append(pieces_session.feed_tokens(ids[:, start:end]))

    torch.testing.assert_close(stepwise, whole, atol=1e-4, rtol=1e-4)
    for (start, end), logits in zip([(0, 5), (5, 6), (6, 33), (33, 70)], last_of_pieces):
        torch.testing.assert_close(logits, whole[:, end - 1], atol=1e-4, rtol=1e-4)


def test_window_limits_what_attention_sees():
    """With a window, tokens older than the window cannot change the output of attention alone."""
    model = make_model(preset="tiny-transformer", window=None)
    windowed = HoldfastModel(model.config.with_window(4)).eval()
    windowed.load_state_dict(model.state_dict())
    ids = token_ids(40)
    changed_far_past = ids.clone()
    changed_far_past[0, 0] = (ids[0, 0] + 1) % 256
    with torch.no_grad():
        same = windowed(input_ids=ids)[:, -1]
        after_change = windowed(input_ids=changed_far_past)[:, -1]
        full_same = model(input_ids=ids)[:, -1]
        full_after_change = model(input_ids=changed_far_past)[:, -1]
    # Attention-only model: information moves at most 4 positions per layer, so through its 5
    # attention layers the first token reaches position 20 at most, not position 39.
    torch.testing.assert_close(same, after_change)
    assert not torch.allclose(full_same, full_after_change)


def test_bounded_state_stops_growing_and_twin_grows_linearly():
    hybrid = Session(make_model("tiny"))
    twin = Session(make_model("tiny-transformer"))
    step = [7] * 20  # one "step" of 20 tokens
    hybrid_sizes, twin_sizes = {}, {}
    for i in range(1, 101):
        hybrid.feed_tokens(step)
        twin.feed_tokens(step)
        if i in (10, 50, 100):
            hybrid_sizes[i], twin_sizes[i] = hybrid.state_bytes(), twin.state_bytes()

    assert hybrid_sizes[10] == hybrid_sizes[100]
    growth_first = twin_sizes[50] - twin_sizes[10]
    growth_second = twin_sizes[100] - twin_sizes[50]
    assert growth_first > 0
    # 40 steps then 50 steps: linear growth means equal growth per step.
    assert growth_first / 40 == growth_second / 50


def test_snapshot_restores_next_token_logits(tmp_path):
    model = make_model()
    session = Session(model)
    session.feed_tokens(token_ids(90)[0])
    path = tmp_path / "session.safetensors"
    session.snapshot(path)

    restored = Session.restore(path, model)
    follow_up = token_ids(5, seed=9)[0]
    torch.testing.assert_close(restored.last_logits, session.last_logits)
    torch.testing.assert_close(restored.feed_tokens(follow_up), session.feed_tokens(follow_up), atol=1e-5, rtol=1e-5)
    assert restored.state_bytes() == session.state_bytes()


def test_snapshot_rejects_other_model(tmp_path):
    session = Session(make_model("tiny"))
    session.feed_tokens([1, 2, 3])
    path = tmp_path / "s.safetensors"
    session.snapshot(path)
    with pytest.raises(ValueError, match="different model configuration"):
        Session.restore(path, make_model("tiny-transformer"))


def test_batched_sessions_match_single_sessions():
    model = make_model()
    first, second = Session(model), Session(model)
    first.feed_tokens(token_ids(30, seed=1)[0])
    second.feed_tokens(token_ids(30, seed=2)[0])

    batch = Session.stack([first, second])
    next_tokens = torch.cat([token_ids(12, seed=3), token_ids(12, seed=4)])
    batch_logits = batch.feed_tokens(next_tokens)

    torch.testing.assert_close(batch_logits[0:1], first.feed_tokens(next_tokens[0]), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(batch_logits[1:2], second.feed_tokens(next_tokens[1]), atol=1e-5, rtol=1e-5)
    split = batch.split()
    torch.testing.assert_close(split[1].feed_tokens([5]), second.feed_tokens([5]), atol=1e-5, rtol=1e-5)


def test_checkpoint_rollback_restores_history():
    model = make_model()
    session = Session(model)
    session.feed_tokens(token_ids(80)[0])
    before = session.state_bytes()
    mark = session.checkpoint()
    session.generate(10)
    session.rollback(mark)
    reference = Session(model)
    reference.feed_tokens(token_ids(80)[0])
    assert session.state_bytes() == before
    torch.testing.assert_close(session.feed_tokens([3, 4]), reference.feed_tokens([3, 4]), atol=1e-5, rtol=1e-5)


def test_generate_stops_at_stop_token():
    model = make_model()
    session = Session(model)
    session.feed_tokens([1, 2, 3])
    stop = int(session.last_logits.argmax())
    assert session.generate(10, stop_id=stop) == [[stop]]


def test_image_feed_adds_one_span():
    model = make_model()
    session = Session(model)
    vision = model.config.vision
    pixels = torch.zeros(3, vision.image_height, vision.image_width)
    session.feed_image(pixels, prefix=[1], suffix=[2])
    # prefix + <image> + image tokens + </image> + suffix
    assert session.tokens_seen == 1 + 1 + vision.image_tokens + 1 + 1


def test_policy_predict_without_commit_leaves_history():
    from model.policy import ModelPolicy

    policy = ModelPolicy(make_model())
    policy.start("open the settings")
    policy.observe(Image.new("RGB", (320, 200), "white"))
    before = policy.state_bytes()
    first = policy.predict(commit=False)
    assert policy.predict(commit=False) == first
    assert policy.state_bytes() == before
    policy.feed_action("click(0.500,0.500)")
    assert policy.session.tokens_seen > 0


@pytest.mark.parametrize("preset", ["tiny", "tiny-transformer"])
def test_config_state_bytes_matches_session(preset):
    model = make_model(preset)
    session = Session(model)
    session.feed_image(torch.zeros(3, model.config.vision.image_height, model.config.vision.image_width))
    session.feed_tokens(token_ids(150 - session.tokens_seen)[0])
    assert session.tokens_seen == 150
    assert sum(model.config.state_bytes(150).values()) == session.state_bytes()


def test_set_attention_window_bounds_new_sessions():
    model = make_model("tiny", window=None)
    unbounded = Session(model)
    unbounded.feed_tokens(token_ids(100)[0])

    model.set_attention_window(8)
    bounded = Session(model)
    bounded.feed_image(torch.zeros(3, model.config.vision.image_height, model.config.vision.image_width))
    bounded.feed_tokens(token_ids(100 - bounded.tokens_seen)[0])

    assert bounded.state_bytes() < unbounded.state_bytes()
    assert sum(model.config.state_bytes(100).values()) == bounded.state_bytes()


def test_mamba_state_carries_beyond_window():
    """With a 4-token window, only the Mamba-2 state can carry the first token to position 39."""
    model = make_model("tiny", window=4)
    ids = token_ids(40)
    changed_far_past = ids.clone()
    changed_far_past[0, 0] = (ids[0, 0] + 1) % 256
    session, changed_session = Session(model), Session(model)
    for t in range(40):
        same = session.feed_tokens(ids[:, t:t + 1])
        after_change = changed_session.feed_tokens(changed_far_past[:, t:t + 1])
    assert session.state_bytes() == changed_session.state_bytes()
    assert not torch.allclose(same, after_change, atol=1e-6)
