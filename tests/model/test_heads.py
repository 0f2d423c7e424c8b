"""The pointer head (coordinates chosen over image tokens) and the copy head (tokens copied from
the instruction): geometry, alignment with pixel shuffle, sessions and the mixed distribution."""

import random

import pytest
import torch
from PIL import Image

from agent.actions import Click, Drag, Type, format_action
from model.config import get_preset
from model.copy import CopyHead, mixed_distribution
from model.hybrid import HoldfastModel
from model.pointer import (
    class_to_pair_text, class_to_point, content_fraction, coordinate_pairs, expects_pair, point_to_class,
)
from model.session import Session
from model.tokenizer import ByteTokenizer
from model.vision import image_to_tensor, pixel_shuffle


@pytest.mark.parametrize("size", [(160, 210), (320, 200), (64, 64)])
def test_pointer_round_trip_within_half_cell(size):
    config = get_preset("practice")
    vision, subdivision = config.vision, config.pointer_subdivision
    content = content_fraction(*size, vision)
    # Half a sub-cell of the input, in screenshot fractions.
    half_x = vision.image_width / (vision.grid_width // 2 * subdivision) / 2 / (vision.image_width * content[0])
    half_y = vision.image_height / (vision.grid_height // 2 * subdivision) / 2 / (vision.image_height * content[1])
    rng = random.Random(0)
    for _ in range(500):
        x, y = rng.random(), rng.random()
        px, py = class_to_point(point_to_class(x, y, content, vision, subdivision), content, vision, subdivision)
        assert abs(px - x) <= half_x + 1e-9
        assert abs(py - y) <= half_y + 1e-9


def test_pointer_classes_follow_pixel_shuffle_token_order():
    """A point's class names the image token whose patches hold that point."""
    vision = get_preset("practice").vision
    subdivision = 4
    screen = (vision.image_width, vision.image_height)  # fills the input: content (1, 1)
    rng = random.Random(1)
    for _ in range(20):
        x, y = rng.random(), rng.random()
        image = Image.new("RGB", screen, "black")
        image.putpixel((int(x * screen[0]), int(y * screen[1])), (255, 255, 255))
        pixels = image_to_tensor(image, vision)
        patch = vision.patch_size
        patches = pixels.unfold(1, patch, patch).unfold(2, patch, patch)  # (3, gh, gw, p, p)
        brightness = patches.amax(dim=(0, 3, 4)).reshape(1, -1, 1)  # one feature per patch
        tokens = pixel_shuffle(brightness, vision.grid_height, vision.grid_width).amax(-1)[0]
        lit = int(tokens.argmax())
        assert point_to_class(x, y, (1.0, 1.0), vision, subdivision) // subdivision**2 == lit


def test_pair_text_has_the_action_text_width():
    """The pointer's text has the width of a formatted pair, so training can splice it in place."""
    config = get_preset("practice")
    vision, subdivision = config.vision, config.pointer_subdivision
    content = content_fraction(160, 210, vision)
    classes = vision.image_tokens * subdivision**2
    for index in (0, classes // 2, classes - 1):
        x, y = class_to_point(index, content, vision, subdivision)
        text = class_to_pair_text(index, content, vision, subdivision)
        start, end, _, _ = coordinate_pairs(Click(x=round(x, 3), y=round(y, 3)))[0]
        assert len(text) == end - start
        assert text == format_action(Click(x=round(x, 3), y=round(y, 3)))[start:end]


def test_coordinate_pairs_locate_the_text_of_each_point():
    for action in (Click(x=0.25, y=0.5), Drag(x=0.1, y=0.2, to_x=0.3, to_y=0.4)):
        text = format_action(action)
        pairs = coordinate_pairs(action)
        points = [(action.x, action.y)] + ([(action.to_x, action.to_y)] if isinstance(action, Drag) else [])
        assert [(x, y) for _, _, x, y in pairs] == points
        assert [text[start:end] for start, end, _, _ in pairs] == [f"{x:.3f},{y:.3f}" for x, y in points]
        for start, _, _, _ in pairs:
            assert expects_pair(text[:start])
    assert coordinate_pairs(Type(text="0.500,0.500")) == []


@pytest.mark.parametrize("text, expected", [
    ("click(", True), ("double_click(", True), ("drag(0.100,0.200,", True),
    ("click(0", False), ("type(", False), ("", False), ("drag(0.100,0.200,0.3", False),
])
def test_expects_pair(text, expected):
    assert expects_pair(text) is expected


def make_tiny(seed=0):
    torch.manual_seed(seed)
    return HoldfastModel(get_preset("tiny")).eval()


def test_pointer_logits_depend_on_the_screenshot():
    model = make_tiny()
    vision = model.config.vision
    scores = []
    for colour in ("white", "red"):
        session = Session(model)
        session.feed_tokens([ByteTokenizer().instruction_id, *b"click"])
        session.feed_image(image_to_tensor(Image.new("RGB", (64, 64), colour), vision))
        scores.append(session.point())
    assert scores[0].shape == (1, vision.image_tokens * model.config.pointer_subdivision**2)
    assert not torch.allclose(scores[0], scores[1])


def test_pointer_needs_a_screenshot():
    session = Session(make_tiny())
    session.feed_tokens([1, 2, 3])
    with pytest.raises(RuntimeError, match="no screenshot"):
        session.point()


def test_mixed_distribution_puts_copy_mass_on_copied_tokens():
    logits = torch.randn(2, 10)
    attention = torch.tensor([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]])
    values = torch.tensor([[3, 3, 7], [1, 2, 1]])
    gate = torch.tensor([0.25, 0.0])
    mixed = mixed_distribution(logits, attention, gate, values)
    torch.testing.assert_close(mixed.sum(-1), torch.ones(2))
    vocabulary = logits.softmax(-1)
    torch.testing.assert_close(mixed[0, 3], 0.25 * vocabulary[0, 3] + 0.75)
    torch.testing.assert_close(mixed[1], torch.zeros(10).index_add(0, values[1], attention[1]))


def test_case_modes_move_copy_mass():
    head = CopyHead(hidden_size=8, key_size=4, vocab_size=272)
    values = torch.tensor([[ord("a"), ord("B"), ord("7")]])
    assert head.sources(values).tolist() == [[ord("a"), ord("B"), ord("7"), ord("A"), ord("B"), ord("7"),
                                              ord("a"), ord("b"), ord("7")]]
    with torch.no_grad():
        head.case.weight.zero_()
        head.case.bias.copy_(torch.tensor([0.0, 20.0, 0.0]))  # nearly all weight on upper case
        head.gate.weight.zero_()
        head.gate.bias.fill_(-20.0)  # nearly all weight on the copy side
    hidden, keys = torch.randn(1, 8), torch.randn(1, 3, 4)
    with torch.no_grad():
        attention, gate = head(hidden, keys, mask=torch.tensor([[True, False, False]]))
        mixed = mixed_distribution(torch.zeros(1, 272), attention, gate, head.sources(values))
    torch.testing.assert_close(mixed.sum(-1), torch.ones(1))
    assert float(mixed[0, ord("A")]) > 0.99
    assert float(mixed[0, ord("a")]) < 0.01


def test_session_copy_table_holds_the_instruction():
    model = make_tiny()
    tok = ByteTokenizer()
    ids = [tok.instruction_id, *tok.encode('type "Ana"')]
    session = Session(model)
    session.feed_copy_source(ids)
    assert session.copy_values[0].tolist() == ids[1:]
    assert session.copy_keys.shape == (1, len(ids) - 1, model.copy_head.key_size)
    probabilities = session.next_token_probabilities()
    torch.testing.assert_close(probabilities.sum(-1), torch.ones(1))
    # Every instruction byte is a possible copy, so each gets some probability from the copy side.
    assert bool((probabilities[0, ids[1:]] > 0).all())
    assert sum(model.config.state_bytes(session.tokens_seen, instruction_tokens=len(ids) - 1).values()) == (
        session.state_bytes() + model.config.state_bytes(session.tokens_seen)["pointer"]
    )
