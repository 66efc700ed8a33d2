"""Label scales and quadrants: the one home of every scale, its name, conversions and the quadrant rule.

Readers return labels **on their own scale, saying which**; nothing is rescaled silently:
:func:`to_unit` / :func:`from_unit` convert only where a caller asks. The scales side by side:

==================  =======================================  ============  ========  =====================
dataset             labels                                   scale         midpoint  ``to_unit(x)``
==================  =======================================  ============  ========  =====================
DEAM static         song means (and stds) over raters        1-9           5         (x - 5) / 4
DEAM dynamic        2 Hz from 15 s                           [-1, 1]       0         x
PMEmo static        song means (and stds) over raters        0-1           0.5       2 x - 1
PMEmo dynamic       2 Hz from 15.5 s, files hold 0-1         returned on [-1, 1] = ``to_unit(x, "0-1")``
4Q (TAFFC)          one Russell quadrant per clip, Q1..Q4    none          -         - (no values)
user CSV            valence/arousal on the scale the user names, or a quadrant column
==================  =======================================  ============  ========  =====================

Metric names carry the scale they are on (:attr:`Scale.suffix`: ``_1to9``, ``_pm1``, ``_0to1``). Static
training works on ``(y - 5) / 4`` (:func:`normalise_static`), mapped back by :func:`denormalise_static`
before any metric or printed value.

Quadrants (Russell): Q1 = positive valence, high arousal; Q2 = negative valence, high arousal; Q3 = negative
valence, low arousal; Q4 = positive valence, low arousal. A continuous label gets its quadrant from its sign
around the scale midpoint; a value ON the midpoint counts as positive / high (:func:`quadrant_of`).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

import numpy as np

from deam_mamba.core.errors import ConfigError, LabelError

T = TypeVar("T")


class LabelKind(StrEnum):
    """What a dataset's labels are: continuous valence/arousal per song, or one quadrant per song."""

    STATIC = "static"
    QUADRANT = "quadrant"
    NONE = "none"  # label-free audio (a pretraining corpus, :class:`deam_mamba.data.folders.AudioFolders`)


@dataclass(frozen=True)
class Scale:
    """A closed label range ``[lo, hi]`` with a display ``name`` ("1-9", "0-1", "[-1, 1]")."""

    name: str
    lo: float
    hi: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lo) and math.isfinite(self.hi) and self.lo < self.hi):
            raise ConfigError(f"scale {self.name!r}: need finite lo < hi, got lo={self.lo}, hi={self.hi}")

    @property
    def midpoint(self) -> float:
        """``(lo + hi) / 2``: the neutral value; quadrants split here (on it counts as positive/high)."""
        return (self.lo + self.hi) / 2.0

    @property
    def span(self) -> float:
        """``hi - lo``: also the largest possible std of ratings on this scale."""
        return self.hi - self.lo

    @property
    def bounds(self) -> tuple[float, float]:
        return (self.lo, self.hi)

    @property
    def suffix(self) -> str:
        """What metric names on this scale end in: ``1to9``, ``pm1``, ``0to1``, else ``<lo>to<hi>``."""
        if (self.lo, self.hi) == (-1.0, 1.0):
            return "pm1"
        return f"{self.lo:g}to{self.hi:g}".replace("-", "m").replace(".", "p")

    def contains(self, x: float | np.ndarray) -> bool:
        """True if every value is finite and within ``[lo, hi]``."""
        arr = np.asarray(x, dtype=np.float64)
        return bool(np.all(np.isfinite(arr)) and np.all((arr >= self.lo) & (arr <= self.hi)))

    def to_unit(self, x: T) -> T:
        """This scale -> [-1, 1] (lo -> -1, midpoint -> 0, hi -> 1) on floats, arrays or tensors."""
        return (x - self.midpoint) / (self.span / 2.0)

    def from_unit(self, u: T) -> T:
        """[-1, 1] -> this scale (inverse of :meth:`to_unit`)."""
        return u * (self.span / 2.0) + self.midpoint

    def __str__(self) -> str:
        return self.name


SCALE_1_9 = Scale("1-9", 1.0, 9.0)        # DEAM static (and the raw 9-point SAM ratings of PMEmo)
SCALE_0_1 = Scale("0-1", 0.0, 1.0)        # PMEmo static and dynamic files
SCALE_PM1 = Scale("[-1, 1]", -1.0, 1.0)   # DEAM dynamic; every dynamic_labels() return
STATIC = SCALE_1_9   # DEAM's static (song-level) labels: what static runs predict
DYNAMIC = SCALE_PM1  # DEAM's dynamic (2 Hz) labels: what dynamic runs predict
SCALES: dict[str, Scale] = {s.name: s for s in (SCALE_1_9, SCALE_0_1, SCALE_PM1)}
_NUM = r"[-+]?\d+(?:\.\d*)?|[-+]?\.\d+"
_SCALE_SPEC = re.compile(rf"^\[?\s*({_NUM})\s*(?:,|\.\.|-|to)\s*({_NUM})\s*\]?$", re.IGNORECASE)
SCALE_HELP = "name one of 1-9, 0-1, [-1, 1] or 'lo,hi' (e.g. '1,7')"


def parse_scale(spec: str | Scale | tuple[float, float]) -> Scale:
    """A :class:`Scale` from a name ("1-9", "0-1", "[-1, 1]"), "lo,hi" / "lo..hi" / "[lo, hi]", or a tuple."""
    if isinstance(spec, Scale):
        return spec
    if isinstance(spec, tuple) and len(spec) == 2:
        lo, hi = float(spec[0]), float(spec[1])
    else:
        text = str(spec).strip()
        if text in SCALES:
            return SCALES[text]
        m = _SCALE_SPEC.match(text)
        if not m:
            raise ConfigError(f"scale {spec!r} not understood: {SCALE_HELP}")
        lo, hi = float(m.group(1)), float(m.group(2))
    known = next((s for s in SCALES.values() if (s.lo, s.hi) == (lo, hi)), None)
    return known or Scale(f"{lo:g}-{hi:g}" if lo >= 0 else f"[{lo:g}, {hi:g}]", lo, hi)


def _float_or_array(x: np.ndarray) -> float | np.ndarray:
    return float(x) if x.ndim == 0 else x


def to_unit(x: float | np.ndarray, scale: Scale | str) -> float | np.ndarray:
    """Map values on ``scale`` linearly onto [-1, 1] (lo -> -1, midpoint -> 0, hi -> 1); float64."""
    return _float_or_array(parse_scale(scale).to_unit(np.asarray(x, dtype=np.float64)))


def from_unit(u: float | np.ndarray, scale: Scale | str) -> float | np.ndarray:
    """Inverse of :func:`to_unit`: values on [-1, 1] back onto ``scale``; float64."""
    return _float_or_array(parse_scale(scale).from_unit(np.asarray(u, dtype=np.float64)))


def spread_to_unit(std: float | np.ndarray, scale: Scale | str) -> float | np.ndarray:
    """A std (or any difference) on ``scale`` expressed on [-1, 1]: times ``2 / span``, no offset."""
    return _float_or_array(np.asarray(std, dtype=np.float64) * 2.0 / parse_scale(scale).span)


def normalise_static(y: T) -> T:
    """1-9 scale -> training scale ``(y - 5) / 4`` (floats, arrays or tensors)."""
    return STATIC.to_unit(y)


def denormalise_static(y: object) -> np.ndarray:
    """Training scale -> 1-9 scale, as float64."""
    return STATIC.from_unit(np.asarray(y, dtype=np.float64))


# --- quadrants -------------------------------------------------------------------------------------------------
QUADRANTS = (1, 2, 3, 4)
_QUADRANT_TEXT = re.compile(r"^\s*q?\s*([1-4])\s*$", re.IGNORECASE)


def parse_quadrant(text: str | int) -> int | None:
    """``"Q1".."Q4"`` / ``"q3"`` / ``"1".."4"`` / ``1..4`` -> 1..4; anything else -> None."""
    m = _QUADRANT_TEXT.match(str(text))
    return int(m.group(1)) if m else None


def quadrant_name(q: int) -> str:
    """``1 -> "Q1"``."""
    return f"Q{int(q)}"


def quadrant_of(valence: float | np.ndarray, arousal: float | np.ndarray,
                midpoint: Scale | str | float | tuple[float, float]) -> int | np.ndarray:
    """Russell quadrant 1..4 of each (valence, arousal) pair; on the midpoint counts as positive / high.

    ``midpoint``: a :class:`Scale` (or its name), one number for both axes (5 on 1-9, 0 on [-1, 1]) or
    ``(valence_mid, arousal_mid)``. Scalars give an int, arrays an int64 array; NaN or mismatched
    shapes raise :class:`LabelError`.
    """
    if isinstance(midpoint, (Scale, str)):
        mv = ma = parse_scale(midpoint).midpoint
    elif np.ndim(midpoint) == 0:
        mv = ma = float(midpoint)
    else:
        mv, ma = (float(m) for m in midpoint)
    v, a = np.asarray(valence, dtype=np.float64), np.asarray(arousal, dtype=np.float64)
    if v.shape != a.shape:
        raise LabelError(f"valence has shape {v.shape} but arousal has shape {a.shape}")
    if not (np.isfinite(v).all() and np.isfinite(a).all() and math.isfinite(mv) and math.isfinite(ma)):
        raise LabelError("quadrant_of: valence, arousal and the midpoint must be finite (NaN found)")
    positive, high = v >= mv, a >= ma
    q = np.where(high, np.where(positive, 1, 2), np.where(positive, 4, 3)).astype(np.int64)
    return int(q) if q.ndim == 0 else q


def parse_quadrants(values: object, what: str = "quadrants") -> np.ndarray:
    """Sequence of quadrant labels (ints or ``"Q1"``-style strings) -> ``[N]`` int64 in 1..4."""
    a = np.asarray(values)
    if a.ndim != 1:
        raise LabelError(f"{what}: expected a 1-D sequence of quadrants, got shape {a.shape}")
    if a.size == 0:
        return np.zeros(0, dtype=np.int64)
    if a.dtype.kind in "iu":
        bad = ~np.isin(a, QUADRANTS)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise LabelError(f"{what}: {int(bad.sum())} value(s) not in 1..4 (first {a[i].item()!r} at index {i})")
        return a.astype(np.int64)
    if a.dtype.kind == "f":
        raise LabelError(f"{what}: quadrants must be ints 1..4 or strings 'Q1'..'Q4', got float dtype")
    out = np.empty(a.shape[0], dtype=np.int64)
    for i, v in enumerate(a.tolist()):
        q = None if isinstance(v, bool) else parse_quadrant(v)
        if q is None:
            raise LabelError(f"{what}, index {i}: not a quadrant: {v!r} (expected Q1..Q4 or 1..4)")
        out[i] = q
    return out


def quadrant_axes(q: int | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Quadrants (a value or ``[N]``; 1..4 or ``"Q1"``-style) -> ``(valence positive, arousal high)`` bool
    ``[N]`` arrays (Q1: both; Q2: high only; Q3: neither; Q4: positive only); :func:`parse_quadrants` checks them."""
    qq = parse_quadrants(np.atleast_1d(np.asarray(q)))
    return np.isin(qq, (1, 4)), np.isin(qq, (1, 2))
