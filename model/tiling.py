"""Nemotron-Nano-VL image tiling: a grid of square tiles chosen by aspect ratio, plus a thumbnail.

A screenshot is resized to `cols x rows` tiles of `tile_size` pixels, where the grid is the one
whose aspect ratio is closest to the image's among all grids of 1 to `max_num_tiles` tiles. A
tie between grids of the same ratio goes to the larger grid only when the image has more than
half of that grid's pixels, so a small image is not blown up into many tiles. When the grid
has more than one tile, a thumbnail of the whole image (one more tile) follows the grid tiles.

NOTE: this is the rule of InternVL's `dynamic_preprocess`, which Nemotron-Nano-VL's processor
is described as following; it was not compared against that processor's remote code here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import Image
from torch import Tensor

DEFAULT_TILE_SIZE = 512  # `force_image_size` of Nemotron-Nano-12B-v2-VL
DEFAULT_MAX_NUM_TILES = 12
DEFAULT_PATCH_SIZE = 16
DEFAULT_DOWNSAMPLE_RATIO = 0.5  # pixel shuffle folds 2x2 patches into one token


@dataclass(frozen=True)
class TileGrid:
    """The cut of one image: `cols x rows` grid tiles, plus a thumbnail tile when `thumbnail`."""

    cols: int
    rows: int
    thumbnail: bool
    tile_size: int

    @property
    def grid_tiles(self) -> int:
        return self.cols * self.rows

    @property
    def num_tiles(self) -> int:
        """Tiles sent to the vision encoder: the grid plus the thumbnail."""
        return self.grid_tiles + int(self.thumbnail)

    @property
    def resized_size(self) -> tuple[int, int]:
        """(width, height) the image is resized to before it is cut."""
        return (self.cols * self.tile_size, self.rows * self.tile_size)


def tokens_per_tile(tile_size: int = DEFAULT_TILE_SIZE, patch_size: int = DEFAULT_PATCH_SIZE,
                    downsample_ratio: float = DEFAULT_DOWNSAMPLE_RATIO) -> int:
    """Language-model tokens one tile becomes: (tile / patch * ratio) squared, 256 for 512 / 16 / 0.5."""
    if tile_size % patch_size:
        raise ValueError(f"tile size {tile_size} is not a multiple of the patch size {patch_size}")
    side = tile_size // patch_size * downsample_ratio
    if side != int(side):
        raise ValueError(f"{tile_size // patch_size} patches per side cannot be folded by downsample ratio {downsample_ratio}")
    return int(side) ** 2


def candidate_grids(max_num_tiles: int, min_num_tiles: int = 1) -> list[tuple[int, int]]:
    """Return every (cols, rows) with min..max tiles, ordered by tile count, the order that breaks ties."""
    grids = {
        (cols, rows)
        for count in range(min_num_tiles, max_num_tiles + 1)
        for cols in range(1, count + 1)
        for rows in range(1, count + 1)
        if min_num_tiles <= cols * rows <= max_num_tiles
    }
    return sorted(grids, key=lambda grid: (grid[0] * grid[1], grid))


def choose_grid(width: int, height: int, max_num_tiles: int = DEFAULT_MAX_NUM_TILES,
                tile_size: int = DEFAULT_TILE_SIZE, use_thumbnail: bool = True) -> TileGrid:
    """Pick the tile grid for an image of width x height pixels (see the module docstring)."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if max_num_tiles < 1:
        raise ValueError(f"max_num_tiles must be at least 1, got {max_num_tiles}")
    aspect = width / height
    area = width * height
    best = (1, 1)
    best_difference = float("inf")
    for cols, rows in candidate_grids(max_num_tiles):
        difference = abs(aspect - cols / rows)
        if difference < best_difference:
            best, best_difference = (cols, rows), difference
        elif difference == best_difference and area > 0.5 * tile_size * tile_size * cols * rows:
            best = (cols, rows)
    cols, rows = best
    return TileGrid(cols, rows, thumbnail=use_thumbnail and cols * rows > 1, tile_size=tile_size)


def cut_tiles(image: Image.Image, grid: TileGrid) -> list[Image.Image]:
    """Resize the image to the grid and cut it into tiles, row by row; the thumbnail comes last."""
    image = image.convert("RGB")
    size = grid.tile_size
    # PIL's bicubic resize widens its filter when it shrinks, so downscaling is antialiased.
    resized = image.resize(grid.resized_size, Image.BICUBIC)
    tiles = [
        resized.crop((col * size, row * size, (col + 1) * size, (row + 1) * size))
        for row in range(grid.rows)
        for col in range(grid.cols)
    ]
    if grid.thumbnail:
        tiles.append(image.resize((size, size), Image.BICUBIC))
    return tiles


def normalize_tiles(tiles: list[Image.Image], mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    """Stack tiles into (T, 3, S, S) float32, scaled to 0..1 and normalised per channel."""
    pixels = torch.stack([
        torch.frombuffer(bytearray(tile.tobytes()), dtype=torch.uint8).view(tile.height, tile.width, 3)
        for tile in tiles
    ])  # (T, S, S, 3)
    pixels = pixels.permute(0, 3, 1, 2).float() / 255.0
    mean_tensor = torch.tensor(mean, dtype=torch.float32)[:, None, None]
    std_tensor = torch.tensor(std, dtype=torch.float32)[:, None, None]
    return (pixels - mean_tensor) / std_tensor


def image_to_tiles(image: Image.Image, mean: tuple[float, ...], std: tuple[float, ...],
                   max_num_tiles: int = DEFAULT_MAX_NUM_TILES, tile_size: int = DEFAULT_TILE_SIZE,
                   use_thumbnail: bool = True) -> tuple[Tensor, TileGrid]:
    """Cut and normalise one image: returns (T, 3, S, S) pixels and the grid that was used."""
    grid = choose_grid(image.width, image.height, max_num_tiles, tile_size, use_thumbnail)
    return normalize_tiles(cut_tiles(image, grid), mean, std), grid
