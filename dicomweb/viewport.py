"""Which part of a rendered image, at what size (PS3.18 8.3.5.1.3 viewport, 9 region)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from PIL import Image

from foundation.errors import InvalidQuery

MAX_VIEWPORT = 4096  # pixels a side: bigger is a mistake or an attack on memory


@dataclass(frozen=True)
class Viewport:
    """`vw,vh[,sx,sy,sw,sh]`: the source region (all of it by default) fitted in vw × vh.

    The aspect ratio is kept, so the image fills the viewport in one dimension only. A
    negative sw or sh flips the region. WADO-URI's rows and columns are a viewport with
    one side possibly missing.
    """

    columns: int | None
    rows: int | None
    sx: int | None = None
    sy: int | None = None
    sw: int | None = None
    sh: int | None = None

    def __post_init__(self) -> None:
        if self.columns is None and self.rows is None:
            raise InvalidQuery("a viewport needs a width or a height")
        for name, size in (("width", self.columns), ("height", self.rows)):
            if size is not None and not 1 <= size <= MAX_VIEWPORT:
                raise InvalidQuery(f"viewport {name} {size} must be between 1 and {MAX_VIEWPORT}")
        if (self.sx or 0) < 0 or (self.sy or 0) < 0:
            raise InvalidQuery("viewport sx and sy must not be negative")
        if self.sw == 0 or self.sh == 0:
            raise InvalidQuery("viewport sw and sh must not be 0")


@dataclass(frozen=True)
class Region:
    """WADO-URI `region=x1,y1,x2,y2`: a rectangle in fractions of the image (PS3.18 9)."""

    x1: float
    y1: float
    x2: float
    y2: float

    def __post_init__(self) -> None:
        if not (0 <= self.x1 < self.x2 <= 1 and 0 <= self.y1 < self.y2 <= 1):
            raise InvalidQuery("region needs 0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1")


def apply_geometry(
    image: Image.Image, region: Region | None, viewport: Viewport | None
) -> Image.Image:
    if region is not None:
        width, height = image.size
        box = (
            math.floor(region.x1 * width),
            math.floor(region.y1 * height),
            max(math.ceil(region.x2 * width), math.floor(region.x1 * width) + 1),
            max(math.ceil(region.y2 * height), math.floor(region.y1 * height) + 1),
        )
        image = image.crop(box)
    if viewport is None:
        return image
    image = _source_region(image, viewport)
    size = fitted_size(image.size, viewport.columns, viewport.rows)
    if size == image.size:
        return image
    return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def _source_region(image: Image.Image, viewport: Viewport) -> Image.Image:
    if viewport.sx is None and viewport.sy is None and viewport.sw is None and viewport.sh is None:
        return image
    width, height = image.size
    sx, sy = viewport.sx or 0, viewport.sy or 0
    sw = viewport.sw if viewport.sw is not None else width - sx
    sh = viewport.sh if viewport.sh is not None else height - sy
    left, right = sorted((sx, sx + sw))
    top, bottom = sorted((sy, sy + sh))
    if left < 0 or top < 0 or right > width or bottom > height or right == left or bottom == top:
        raise InvalidQuery(
            f"viewport source region {sx},{sy},{sw},{sh} lies outside the {width}x{height} image"
        )
    image = image.crop((left, top, right, bottom))
    if sw < 0:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if sh < 0:
        image = image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    return image


def fitted_size(size: tuple[int, int], columns: int | None, rows: int | None) -> tuple[int, int]:
    """The largest size of the same aspect ratio within columns × rows."""
    width, height = size
    scales = [c / width for c in (columns,) if c] + [r / height for r in (rows,) if r]
    scale = min(scales)
    return max(1, round(width * scale)), max(1, round(height * scale))
