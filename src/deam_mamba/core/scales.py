"""Label scales: the one home of every scale, its name and the static training normalisation.

Two DEAM scales live side by side and are never mixed in one loss or one metric:

=============  ============  =========================================  ======================
scale          ``name``      what carries it                           metric name suffix
=============  ============  =========================================  ======================
``STATIC``     ``"1-9"``     DEAM per-song means/stds (1 = negative /   ``_1to9``
                             calm, 9 = positive / excited)
``DYNAMIC``    ``"[-1, 1]"`` DEAM 2 Hz annotations from 15 s            ``_pm1``
``UNIT``       ``"0-1"``     PMEmo static and dynamic means             ``_0to1``
=============  ============  =========================================  ======================

Static training works on ``(y - 5) / 4`` (:func:`normalise_static`), so 1..9 maps onto -1..1;
:func:`denormalise_static` maps model outputs back before any metric or printed value.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from deam_mamba.core.errors import ConfigError

T = TypeVar("T")


@dataclass(frozen=True)
class Scale:
    """A closed label range ``[lo, hi]`` with a printable ``name`` and the suffix metric names carry."""

    name: str
    lo: float
    hi: float
    suffix: str

    @property
    def midpoint(self) -> float:
        """The neutral value: quadrants split valence and arousal here."""
        return (self.lo + self.hi) / 2.0

    @property
    def bounds(self) -> tuple[float, float]:
        return (self.lo, self.hi)

    def to_unit(self, x: T) -> T:
        """This scale -> [-1, 1] (linear; the midpoint goes to 0). Works on floats, arrays and tensors."""
        return (x - self.midpoint) / ((self.hi - self.lo) / 2.0)

    def from_unit(self, x: T) -> T:
        """[-1, 1] -> this scale (inverse of :meth:`to_unit`)."""
        return x * ((self.hi - self.lo) / 2.0) + self.midpoint


STATIC = Scale("1-9", 1.0, 9.0, "1to9")
DYNAMIC = Scale("[-1, 1]", -1.0, 1.0, "pm1")
UNIT = Scale("0-1", 0.0, 1.0, "0to1")
SCALES: dict[str, Scale] = {s.name: s for s in (STATIC, DYNAMIC, UNIT)}


def scale_named(name: str) -> Scale:
    """A known scale by name (``"1-9"``, ``"[-1, 1]"``, ``"0-1"``) or a user's ``"lo,hi"`` pair."""
    if name in SCALES:
        return SCALES[name]
    parts = [p.strip() for p in str(name).strip("[]() ").split(",")]
    try:
        lo, hi = (float(p) for p in parts)
    except ValueError:
        raise ConfigError(f"unknown label scale {name!r}: use one of {', '.join(SCALES)} or 'lo,hi' "
                          "(e.g. '1,7')") from None
    if not lo < hi:
        raise ConfigError(f"label scale {name!r}: the low end must be below the high end")
    return Scale(f"{lo:g}-{hi:g}", lo, hi, f"{lo:g}to{hi:g}".replace("-", "m").replace(".", "p"))


def normalise_static(y: T) -> T:
    """1-9 scale -> training scale ``(y - 5) / 4`` (floats, arrays or tensors)."""
    return STATIC.to_unit(y)


def denormalise_static(y: object) -> np.ndarray:
    """Training scale -> 1-9 scale, as float64."""
    return STATIC.from_unit(np.asarray(y, dtype=np.float64))
