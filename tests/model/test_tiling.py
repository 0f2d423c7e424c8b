"""Nano-VL tiling: grids, thumbnails and token counts against values worked out by hand."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from model.tiling import candidate_grids, choose_grid, cut_tiles, image_to_tiles, normalize_tiles, tokens_per_tile

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# Hand computation, 512-pixel tiles, at most 12 tiles, grids (cols, rows) with cols * rows <= 12.
# A tie in ratio goes to the larger grid only if the image area > 0.5 * 512 * 512 * tiles.
# Each tile gives (512 / 16 * 0.5) ** 2 = 16 * 16 = 256 tokens.
SCREEN_CASES = [
    # 1280x720: aspect 1.778. Closest ratios: 2/1 = 2.0 (off 0.222), 3/2 = 1.5 (off 0.278).
    # 2.0 is first reached by (2, 1); (4, 2) ties, but 1280 * 720 = 921600 is not above
    # 0.5 * 262144 * 8 = 1048576, so (2, 1) stays. 2 tiles + thumbnail = 3 tiles = 768 tokens.
    ((1280, 720), (2, 1), 3, 768),
    # 1920x1080: same aspect; 1920 * 1080 = 2073600 > 1048576, so the tie goes to (4, 2);
    # (6, 3) has 18 tiles, too many. 8 tiles + thumbnail = 9 tiles = 2304 tokens.
    ((1920, 1080), (4, 2), 9, 2304),
    # 2560x1600: aspect 1.6. 3/2 = 1.5 is off 0.1, 2/1 off 0.4, 4/3 off 0.267; 8/5 and 5/3 need
    # more than 12 tiles. (3, 2): 6 tiles + thumbnail = 7 tiles = 1792 tokens.
    ((2560, 1600), (3, 2), 7, 1792),
    # 800x1280 (portrait): aspect 0.625. 2/3 = 0.667 is off 0.042, 1/2 and 3/4 are off 0.125.
    # (2, 3): 6 tiles + thumbnail = 7 tiles = 1792 tokens.
    ((800, 1280), (2, 3), 7, 1792),
]


@pytest.mark.parametrize(("size", "grid", "tiles", "tokens"), SCREEN_CASES, ids=lambda value: str(value))
def test_grid_for_screen_sizes(size, grid, tiles, tokens):
    chosen = choose_grid(*size)
    assert (chosen.cols, chosen.rows) == grid
    assert chosen.thumbnail is True
    assert chosen.num_tiles == tiles
    assert chosen.num_tiles * tokens_per_tile() == tokens
    assert chosen.resized_size == (grid[0] * 512, grid[1] * 512)


def test_single_tile_has_no_thumbnail():
    square = choose_grid(512, 512)
    assert (square.cols, square.rows, square.thumbnail, square.num_tiles) == (1, 1, False, 1)
    capped = choose_grid(1920, 1080, max_num_tiles=1)
    assert (capped.cols, capped.rows, capped.thumbnail, capped.num_tiles) == (1, 1, False, 1)


def test_fewer_tiles_setting_caps_grid():
    # 1920x1080 with at most 4 tiles: 2/1 (off 0.222) beats 3/1 (off 1.222) and 1/1 (off 0.778);
    # the tie (4, 2) has 8 tiles, too many. 2 tiles + thumbnail = 3 tiles.
    grid = choose_grid(1920, 1080, max_num_tiles=4)
    assert (grid.cols, grid.rows, grid.num_tiles) == (2, 1, 3)


def test_tokens_per_tile_values():
    assert tokens_per_tile(512, 16, 0.5) == 256
    assert tokens_per_tile(64, 16, 0.5) == 4
    with pytest.raises(ValueError, match="not a multiple of the patch size"):
        tokens_per_tile(500, 16, 0.5)


def test_candidate_grids_ordered_by_tile_count():
    grids = candidate_grids(4)
    # Every grid of 1 to 4 tiles: 1x1; 1x2, 2x1; 1x3, 3x1; 1x4, 2x2, 4x1.
    assert sorted(grids) == sorted([(1, 1), (1, 2), (2, 1), (1, 3), (3, 1), (1, 4), (2, 2), (4, 1)])
    counts = [cols * rows for cols, rows in grids]
    assert counts == sorted(counts)


def test_invalid_sizes_rejected():
    with pytest.raises(ValueError, match="image size must be positive"):
        choose_grid(0, 10)
    with pytest.raises(ValueError, match="max_num_tiles must be at least 1"):
        choose_grid(100, 100, max_num_tiles=0)


def test_tiles_cut_row_by_row_thumbnail_last():
    # Left half red, right half blue: a 2x1 grid puts red in tile 0 and blue in tile 1.
    image = Image.new("RGB", (1280, 720), (255, 0, 0))
    image.paste((0, 0, 255), (640, 0, 1280, 720))
    grid = choose_grid(*image.size)
    tiles = cut_tiles(image, grid)
    assert len(tiles) == 3
    assert all(tile.size == (512, 512) for tile in tiles)
    assert tiles[0].getpixel((256, 256)) == (255, 0, 0)
    assert tiles[1].getpixel((256, 256)) == (0, 0, 255)
    # The thumbnail squeezes the whole image: red on its left quarter, blue on its right quarter.
    assert tiles[2].getpixel((100, 256)) == (255, 0, 0)
    assert tiles[2].getpixel((400, 256)) == (0, 0, 255)


def test_normalisation_uses_mean_and_std():
    tile = Image.new("RGB", (64, 64), (255, 0, 51))
    pixels = normalize_tiles([tile], CLIP_MEAN, CLIP_STD)
    assert pixels.shape == (1, 3, 64, 64)
    assert pixels.dtype == torch.float32
    # 255 -> 1.0, 0 -> 0.0, 51 -> 0.2, then (value - mean) / std per channel.
    expected = [(1.0 - 0.48145466) / 0.26862954, (0.0 - 0.4578275) / 0.26130258, (0.2 - 0.40821073) / 0.27577711]
    for channel, value in enumerate(expected):
        assert torch.allclose(pixels[0, channel], torch.full((64, 64), value), atol=1e-5)


def test_image_to_tiles_shape():
    pixels, grid = image_to_tiles(Image.new("RGB", (2560, 1600)), CLIP_MEAN, CLIP_STD)
    assert pixels.shape == (7, 3, 512, 512)
    assert grid.num_tiles == 7
