"""The pointer head: screen coordinates chosen over the current screenshot's image tokens.

A small model trained from scratch does not learn, from a few thousand demonstrations, to turn
the screenshot's content into a click's decimal digits: the practice models trained that way
acted the same whatever the screenshot showed. The pointer head
instead scores every image token of the current screenshot against a query from the position
where the coordinates start, the way pointer networks pick an input position. A location on
screen then is an image token, and the model only has to learn which token matches the
instruction. Each token's cell is further split into `subdivision` x `subdivision` sub-cells,
so the choice is one of (tokens x subdivision^2) classes and the point is a sub-cell's centre.

Coordinates in actions are fractions of the screenshot. The model sees the screenshot scaled
to fit its input and padded at the right and bottom (`model.vision.image_to_tensor`), so the
screenshot covers the fraction `content` = (width, height) of the input; points convert with it.
"""

from __future__ import annotations

import math
import re

import torch
from torch import Tensor, nn

from agent.actions import COORDINATE_DECIMALS, POINTER_ACTIONS, Action, format_action
from model.config import POINTER_KEY_SIZE, VisionConfig

# One coordinate pair in an action's canonical text, e.g. "0.460,0.700".
_PAIR = re.compile(r"\d\.\d+,\d\.\d+")
# Generated action text at the point where a coordinate pair comes next: after the opening
# parenthesis of a pointer action, or after a drag's start point.
_PAIR_STARTS = re.compile(r"^(?:(?:click|double_click|right_click|move|scroll|drag)\(|drag\(\d\.\d+,\d\.\d+,)$")


class PointerHead(nn.Module):
    """Bilinear scores between one query per sub-cell and a key per image token."""

    def __init__(self, hidden_size: int, subdivision: int, key_size: int = POINTER_KEY_SIZE) -> None:
        super().__init__()
        self.subdivision = subdivision
        self.key_size = key_size
        self.query = nn.Linear(hidden_size, subdivision * subdivision * key_size, bias=False)
        self.key = nn.Linear(hidden_size, key_size, bias=False)

    def keys(self, image_hidden: Tensor) -> Tensor:
        """(N, T, D) image-token states -> (N, T, key_size) keys, all a session keeps of a screenshot."""
        return self.key(image_hidden)

    def forward(self, query_hidden: Tensor, keys: Tensor) -> Tensor:
        """(N, D) query states and (N, T, key_size) keys -> (N, T * subdivision^2) logits.

        Class c is image token c // subdivision^2, sub-cell c % subdivision^2 (row-major).
        """
        queries = self.query(query_hidden).view(query_hidden.shape[0], -1, self.key_size)  # (N, S*S, K)
        scores = torch.einsum("ntk,nsk->nts", keys.float(), queries.float()) / math.sqrt(self.key_size)
        return scores.flatten(1)


def content_fraction(width: int, height: int, vision: VisionConfig) -> tuple[float, float]:
    """Return the fraction (width, height) of the model input that a width x height screenshot covers."""
    scale = min(vision.image_width / width, vision.image_height / height)
    return (max(1, round(width * scale)) / vision.image_width, max(1, round(height * scale)) / vision.image_height)


def _fine_grid(vision: VisionConfig, subdivision: int) -> tuple[int, int, int]:
    """(token columns, fine columns, fine rows) of the pointer grid over the model input."""
    columns = vision.grid_width // 2  # one image token per 2x2 patches (pixel shuffle)
    return columns, columns * subdivision, (vision.grid_height // 2) * subdivision


def point_to_class(x: float, y: float, content: tuple[float, float], vision: VisionConfig, subdivision: int) -> int:
    """Return the pointer class of screen point (x, y), given as fractions of the screenshot."""
    columns, fine_columns, fine_rows = _fine_grid(vision, subdivision)
    column = min(fine_columns - 1, max(0, int(x * content[0] * fine_columns)))
    row = min(fine_rows - 1, max(0, int(y * content[1] * fine_rows)))
    token = (row // subdivision) * columns + column // subdivision
    return token * subdivision**2 + (row % subdivision) * subdivision + column % subdivision


def class_to_point(index: int, content: tuple[float, float], vision: VisionConfig, subdivision: int) -> tuple[float, float]:
    """Return the screen point (fractions of the screenshot) at the centre of a pointer class's sub-cell.

    A sub-cell in the padding beyond the screenshot maps to the nearest edge (coordinate 1.0).
    """
    columns, fine_columns, fine_rows = _fine_grid(vision, subdivision)
    token, sub = divmod(index, subdivision**2)
    row = (token // columns) * subdivision + sub // subdivision
    column = (token % columns) * subdivision + sub % subdivision
    x = (column + 0.5) / fine_columns / content[0]
    y = (row + 0.5) / fine_rows / content[1]
    return min(1.0, x), min(1.0, y)


def class_to_pair_text(index: int, content: tuple[float, float], vision: VisionConfig, subdivision: int) -> str:
    """Return the coordinate pair text, e.g. "0.457,0.312", that the pointer writes for a class.

    Training feeds the same text, so the tokens after a pair see the digits they see at run time.
    """
    x, y = class_to_point(index, content, vision, subdivision)
    return f"{x:.{COORDINATE_DECIMALS}f},{y:.{COORDINATE_DECIMALS}f}"


def coordinate_pairs(action: Action) -> list[tuple[int, int, float, float]]:
    """Locate each coordinate pair in the action's canonical text.

    Returns (start, end, x, y) per pair, with start and end as character offsets. A click has
    one pair and a drag two; an action without a pointer has none.
    """
    if not isinstance(action, POINTER_ACTIONS):
        return []
    text = format_action(action)
    points = [(action.x, action.y)]
    if hasattr(action, "to_x"):
        points.append((action.to_x, action.to_y))
    matches = list(_PAIR.finditer(text))[: len(points)]
    return [(match.start(), match.end(), x, y) for match, (x, y) in zip(matches, points)]


def expects_pair(text: str) -> bool:
    """True when generated action text stops exactly where a coordinate pair comes next."""
    return _PAIR_STARTS.match(text) is not None
