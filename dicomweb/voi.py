"""VOI LUT: modality values to display values, by window or lookup table (PS3.3 C.11.2)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydicom import Dataset
from pydicom.multival import MultiValue

from foundation.errors import InvalidQuery

# The `window` query parameter's names (PS3.18 8.3.5.1.4) for VOI LUT Function (0028,1056).
WINDOW_FUNCTIONS = {"linear": "LINEAR", "linear-exact": "LINEAR_EXACT", "sigmoid": "SIGMOID"}
_SIGMOID_LIMIT = 60.0  # exp() of more overflows to no visible difference


@dataclass(frozen=True)
class Window:
    """Window center and width in modality units, with the function that maps them."""

    center: float
    width: float
    function: str = "LINEAR"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.center) and math.isfinite(self.width)):
            raise InvalidQuery("window center and width must be finite numbers")
        if self.function not in WINDOW_FUNCTIONS.values():
            names = ", ".join(WINDOW_FUNCTIONS)
            raise InvalidQuery(f"window function {self.function!r} is not one of {names}")
        if self.function == "LINEAR" and self.width < 1:
            raise InvalidQuery(f"window width {self.width:g} must be 1 or more for linear")
        if self.width <= 0:
            raise InvalidQuery(f"window width {self.width:g} must be more than 0")

    def apply(self, values: NDArray[np.generic]) -> NDArray[np.float64]:
        """Display values in [0, 1], by the formulas of PS3.3 C.11.2.1.2 and C.11.2.1.3."""
        x = values.astype(np.float64)
        c, w = self.center, self.width
        if self.function == "SIGMOID":
            exponent = np.clip(-4.0 * (x - c) / w, -_SIGMOID_LIMIT, _SIGMOID_LIMIT)
            return 1.0 / (1.0 + np.exp(exponent))
        if self.function == "LINEAR_EXACT":
            return np.clip((x - c) / w + 0.5, 0.0, 1.0)
        if w == 1:  # the linear ramp is empty: a step at c - 0.5
            return (x > c - 0.5).astype(np.float64)
        return np.clip((x - (c - 0.5)) / (w - 1) + 0.5, 0.0, 1.0)


def apply_voi(
    values: NDArray[np.generic], ds: Dataset, window: Window | None
) -> NDArray[np.float64]:
    """The asked window, else the dataset's first window, its VOI LUT, or the frame's range."""
    window = window or dataset_window(ds)
    if window is not None:
        return window.apply(values)
    if ds.get("VOILUTSequence"):
        return _apply_lut(values, ds.VOILUTSequence[0])
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(values.shape, dtype=np.float64)
    return (values.astype(np.float64) - low) / (high - low)


def dataset_window(ds: Dataset) -> Window | None:
    """The first Window Center/Width pair; a broken one is skipped, not an error."""
    center, width = _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))
    if center is None or width is None:
        return None
    function = str(ds.get("VOILUTFunction") or "LINEAR").upper()
    if function not in WINDOW_FUNCTIONS.values():
        function = "LINEAR"
    try:
        return Window(float(center), float(width), function)
    except (InvalidQuery, ValueError, TypeError):
        return None


def _first(value: Any) -> Any:
    if isinstance(value, MultiValue | list):
        return value[0] if value else None
    return None if value in (None, "") else value


def _apply_lut(values: NDArray[np.generic], item: Dataset) -> NDArray[np.float64]:
    """A VOI LUT Sequence item (PS3.3 C.11.2.1.1): out-of-range inputs take the end entries."""
    entries, first_mapped, bits = (int(v) for v in item.LUTDescriptor)
    data = item.LUTData
    if isinstance(data, bytes):
        lut = np.frombuffer(data, dtype="<u2")
    else:
        lut = np.asarray(data if isinstance(data, MultiValue | list) else [data], dtype=np.int64)
    lut = lut[: entries or 65536]
    positions = np.clip(np.rint(values.astype(np.float64)) - first_mapped, 0, len(lut) - 1)
    shown: NDArray[np.float64] = lut[positions.astype(np.int64)] / float(2**bits - 1)
    return np.clip(shown, 0.0, 1.0)
