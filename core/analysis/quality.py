"""Image-quality issue flags, each judged against the collection's own distribution.

A fixed constant ("darker than 0.2 is dark") misfires on collections that are all dark (night
photos, microscopy) or all pale (line art). Here every flag reads one property
(:mod:`core.image_properties`) on a scale where it is roughly symmetric (a logarithm for sizes,
counts and sharpness), and an image is flagged when its robust z-score passes `DEFAULT_Z` (3.5,
Iglewicz and Hoaglin's outlier cut-off) in the flag's direction; the cut-off is an argument of
every call. Brightness is a share of full white bounded by 0 and 1, so it is read on the logit
scale: near either bound a small step is a large change (a page at 0.999 carries a twentieth of
the ink of one at 0.98), so a washed-out picture stands as far from a collection of pale drawings
as its look says, where on the linear scale it hid inside the spread of their bounded values.
The z-score is (value - median) / spread, the spread taken on each side of the median apart:
the larger of 1.4826 x MAD and the distance to that side's 5% quantile over 1.645 (both equal the
standard deviation of a normal distribution). The quantile keeps a sizeable minority (the photos of
a clip-art set) from being flagged wholesale while a handful of extreme images still are. Each
property has a floor for the MAD, so a collection where nearly every image is alike (all 256x256,
all square) still needs a real difference before a flag is raised, and a few flags also require
what their word means (a "greyscale" image has next to no colour; a "mostly transparent" one is
at least half transparent; in a "dark" one even the brightest twentieth of the pixels is darker
than mid-grey). "dark" reads those highlights rather than the mean: an
under-exposed picture is dark all over, where a drawing in a dark theme still has white around it
and a collection of line art holds enough of those to widen the spread of the mean.

The same z-scores over every property, two-sided, make the property outlier score that the
"fused" anomaly ranking combines with the embedding (:func:`property_outlier_scores`), and their
joint spread makes the property combination score (:func:`property_combination_scores`): an
image each of whose properties is ordinary can still be measured unlike any other.
Images without properties (stored before they existed, until ``repair``) are never flagged and
score as typical.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.linalg import solve_triangular

from core.errors import InvalidRequest
from core.image_properties import PROPERTY_NAMES, PROPERTY_SIDE

DEFAULT_Z = 3.5
Z_CAP = 50.0  # a property's largest contribution to the property outlier score
MAD_TO_SIGMA = 1.4826  # the MAD of a normal distribution times this is its standard deviation
# Each side's spread is also read from a tail quantile: a minority of other images (photos among
# clip art, a tenth of the collection) widens that side instead of being flagged wholesale.
TAIL = 0.05
TAIL_TO_SIGMA = 1.6449  # a normal distribution's 5th percentile lies this many deviations below its median
_LOW, _HIGH, _EITHER = -1, 1, 0
_OPAQUE_FLOOR = 1.0 / PROPERTY_SIDE**2  # the opaque share of a fully transparent image, on the log scale
_HALF_LEVEL = 0.5 / 255.0  # how near 0 or 1 a mean luma of 8-bit pixels can be told from the bound
COMBINATION_CORE = 0.95  # the share of images, least unusual first, whose z-scores say which combinations are usual
COMBINATION_RIDGE = 0.01  # added to their correlation's diagonal: two properties that always agree stay invertible


def _log(x: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(x, 1e-12))


def _log_small(x: np.ndarray) -> np.ndarray:
    """log for values that reach zero (sharpness of a flat image): zero sits a few MADs below the rest."""
    return np.log(x + 1e-6)


def _identity(x: np.ndarray) -> np.ndarray:
    return x


def _logit(share: np.ndarray) -> np.ndarray:
    """log odds of a 0-1 share, kept finite half a grey level (of 255) inside each bound."""
    return np.log((share + _HALF_LEVEL) / (1.0 - share + _HALF_LEVEL))


# Each property on the scale its z-score is taken on, with the floor of its MAD on that scale.
_SCALES: dict[str, tuple[Callable[[np.ndarray], np.ndarray], float]] = {
    "width": (_log, 0.05),
    "height": (_log, 0.05),
    "aspect": (_log, 0.05),
    "pixels": (_log, 0.1),
    "bytes_per_pixel": (_log, 0.1),
    "brightness": (_logit, 0.1),
    "dark_level": (_identity, 0.02),
    "bright_level": (_identity, 0.02),
    "contrast": (_identity, 0.01),
    "colourfulness": (_identity, 0.01),
    "entropy": (_identity, 0.1),
    "sharpness": (_log_small, 0.1),
    "dominant_share": (_identity, 0.02),
    "transparent_share": (lambda share: -_log(1.0 - share + _OPAQUE_FLOOR), 0.05),  # minus log of the opaque share
    "distinct_colours": (_log, 0.1),
}


@dataclass(frozen=True)
class FlagRule:
    """One issue: which property, in which direction, and what it means in a sentence."""

    name: str
    property: str
    direction: int  # -1: unusually low, 1: unusually high, 0: either
    explanation: str
    requires: Callable[[np.ndarray], np.ndarray] | None = None  # what the word means, on the raw values


FLAG_RULES: tuple[FlagRule, ...] = (
    FlagRule("blank", "distinct_colours", _LOW, "far fewer colours than the collection's images: blank or "
             "nearly empty"),
    FlagRule("dark", "bright_level", _LOW, "much darker than the collection's images: even its brightest parts are "
             "dark", lambda bright_level: bright_level < 0.5),
    FlagRule("bright", "brightness", _HIGH, "much brighter than the collection's images: over-exposed or washed out"),
    FlagRule("blurry", "sharpness", _LOW, "much less fine detail than the collection's images: blurred or out of focus"),
    FlagRule("greyscale", "colourfulness", _LOW, "has no colour in a collection of colour images",
             lambda colourfulness: colourfulness < 0.02),
    FlagRule("tiny", "pixels", _LOW, "far fewer pixels than the collection's images"),
    FlagRule("odd_size", "pixels", _HIGH, "far more pixels than the collection's images"),
    FlagRule("odd_aspect", "aspect", _EITHER, "a shape (width to height) unlike the collection's images"),
    FlagRule("mostly_transparent", "transparent_share", _HIGH, "mostly transparent where the collection's images "
             "are not: it shows as an empty page", lambda share: share >= 0.5),
)
FLAG_NAMES: tuple[str, ...] = tuple(rule.name for rule in FLAG_RULES)
FLAG_COLUMNS: tuple[int, ...] = tuple(PROPERTY_NAMES.index(rule.property) for rule in FLAG_RULES)  # in the property matrix


@dataclass(frozen=True, slots=True)
class Flag:
    """One issue found on one image."""

    name: str
    explanation: str
    property: str
    value: float  # the property's value that triggered it
    z: float  # its robust z-score against the collection (signed: below zero = lower than typical)


@dataclass(frozen=True)
class QualityFlags:
    """Every flag of every image of one collection, at one cut-off."""

    z_threshold: float
    properties: np.ndarray  # (n, len(PROPERTY_NAMES)) the property matrix flagged (shared, not copied)
    z: np.ndarray  # (n, len(FLAG_RULES)) signed robust z-scores, 0 when unmeasured
    flagged: np.ndarray  # (n, len(FLAG_RULES)) bool

    def value(self, row: int, j: int) -> float:
        """The raw value of flag ``j``'s property for one image, NaN when unmeasured."""
        return float(self.properties[row, FLAG_COLUMNS[j]])

    def of(self, row: int) -> tuple[Flag, ...]:
        """The flags of one image, strongest first."""
        found = [Flag(rule.name, rule.explanation, rule.property, self.value(row, j), float(self.z[row, j]))
                 for j, rule in enumerate(FLAG_RULES) if self.flagged[row, j]]
        return tuple(sorted(found, key=lambda f: -abs(f.z)))

    def rows_with(self, name: str) -> np.ndarray:
        """Rows flagged ``name``, most extreme first."""
        j = _flag_index(name)
        rows = np.flatnonzero(self.flagged[:, j])
        return rows[np.argsort(-np.abs(self.z[rows, j]), kind="stable")]


def _flag_index(name: str) -> int:
    if name not in FLAG_NAMES:
        raise InvalidRequest("flag", f"{name!r} is not one of {', '.join(FLAG_NAMES)}")
    return FLAG_NAMES.index(name)


def check_threshold(z_threshold: float) -> float:
    if not np.isfinite(z_threshold) or z_threshold <= 0:
        raise InvalidRequest("z_threshold", f"{z_threshold} is not a positive number of MADs")
    return float(z_threshold)


def robust_z(properties: np.ndarray) -> np.ndarray:
    """Signed robust z-score of every property of every row on its own scale; 0 where unmeasured."""
    x = np.asarray(properties, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != len(PROPERTY_NAMES):
        raise ValueError(f"expected an (n, {len(PROPERTY_NAMES)}) property matrix, got shape {x.shape}")
    out = np.zeros_like(x)
    measured = ~np.isnan(x).any(axis=1)
    if measured.sum() < 2:
        return out
    for j, name in enumerate(PROPERTY_NAMES):
        scale, floor = _SCALES[name]
        t = scale(x[measured, j])
        median = np.median(t)
        spread = MAD_TO_SIGMA * max(float(np.median(np.abs(t - median))), floor)
        low, high = np.quantile(t, (TAIL, 1.0 - TAIL))
        below = max(spread, (median - low) / TAIL_TO_SIGMA)
        above = max(spread, (high - median) / TAIL_TO_SIGMA)
        out[measured, j] = np.where(t < median, (t - median) / below, (t - median) / above)
    return out


def quality_flags(properties: np.ndarray, z_threshold: float = DEFAULT_Z) -> QualityFlags:
    """Every image's issue flags against this collection (rows: images; columns: `PROPERTY_NAMES`, NaN where unmeasured)."""
    z_threshold = check_threshold(z_threshold)
    x = np.asarray(properties, dtype=np.float64)
    z = robust_z(x)[:, FLAG_COLUMNS]
    flagged = np.zeros(z.shape, dtype=bool)
    for j, rule in enumerate(FLAG_RULES):
        directed = z[:, j] * rule.direction if rule.direction else np.abs(z[:, j])
        hit = directed >= z_threshold
        if rule.requires is not None:  # NaN (unmeasured) compares false
            hit &= rule.requires(x[:, FLAG_COLUMNS[j]])
        flagged[:, j] = hit
    return QualityFlags(z_threshold, x, z, flagged)


def property_outlier_scores(properties: np.ndarray) -> np.ndarray:
    """How far each image's properties are from the collection's: the root of the summed squares of
    its robust z-scores over every property, each capped at `Z_CAP` (so one degenerate property,
    such as the zero sharpness of a flat image, does not swamp the rest); 0 for an unmeasured image.
    The sum, rather than the largest, counts an image unusual in several ways (a foreign photo
    among icons: opaque, colourful, detailed) above one a little off in a single way."""
    z = robust_z(properties)  # worked on in place: at a million images each copy is 120 MB
    np.abs(z, out=z)
    np.minimum(z, Z_CAP, out=z)
    return np.sqrt(np.einsum("ij,ij->i", z, z))


def property_combination_scores(properties: np.ndarray) -> np.ndarray:
    """How unusual the combination of each image's properties is: the length of its capped robust
    z-scores in the metric of their correlation over the collection's core (the `COMBINATION_CORE`
    share of images with the lowest :func:`property_outlier_scores`), sqrt(z' R^-1 z); 0 for an
    unmeasured image.

    Properties go together (a photo is opaque, colourful and detailed at once; a lighter icon has
    less contrast), so an image can be ordinary in each and still unlike any other: on the
    real-icon benchmark an over-exposed icon measured within range on every property alone, and
    only the combination told it apart. The z-scores keep their own scale (each property's robust
    spread, with its floor) and only the correlation is read from the core: with independent
    properties the score is the property outlier score itself, so images that are alike do not
    become unusual by whitening their noise; and the core, not every image, sets the correlation,
    so the outliers do not loosen the pattern they are measured against."""
    x = np.asarray(properties, dtype=np.float64)
    z = robust_z(x)
    np.clip(z, -Z_CAP, Z_CAP, out=z)
    measured = ~np.isnan(x).any(axis=1)
    out = np.zeros(len(z))
    if measured.sum() < 3:
        return out
    zm = z if measured.all() else z[measured]
    del z
    spread = np.einsum("ij,ij->i", zm, zm)
    core = zm[spread <= np.quantile(spread, COMBINATION_CORE)]
    with np.errstate(invalid="ignore", divide="ignore"):
        correlation = np.nan_to_num(np.corrcoef(core, rowvar=False))  # a property constant over the core: 0
    np.fill_diagonal(correlation, 1.0)
    correlation = (correlation + COMBINATION_RIDGE * np.eye(zm.shape[1])) / (1.0 + COMBINATION_RIDGE)
    del core
    white = solve_triangular(np.linalg.cholesky(correlation), zm.T, lower=True)
    out[measured] = np.sqrt(np.einsum("ij,ij->j", white, white))
    return out
