"""Why an image ranks as unusual, in words an analyst can check on the picture.

From the signals the "fused" ranking combines (:mod:`core.analysis.anomalies`): the embedding
says whether an image is far from its few nearest images ("far from its neighbours") or close to a
few but far from the collection beyond them ("part of a small foreign group"); the properties say
which quality flags it raised (:mod:`core.analysis.quality`), or, with none raised, which property
is most unlike the collection's, or, with no property unusual alone, that their combination is.
"""

from __future__ import annotations

import numpy as np

from core.analysis.quality import QualityFlags
from core.image_properties import PROPERTY_NAMES

REASON_PERCENTILE = 95.0  # an embedding distance counts as a reason from this percentile of the collection
FAR_FROM_NEIGHBOURS = "far from its neighbours"
FOREIGN_GROUP = "part of a small foreign group"
UNUSUAL_COMBINATION = "unusual combination of properties"


def image_reasons(near_percentile: np.ndarray, far_percentile: np.ndarray, flags: QualityFlags,
                  property_z: np.ndarray, combination_p: np.ndarray) -> tuple[tuple[str, ...], ...]:
    """Each row's reasons, strongest evidence first: embedding reasons, then flags (strongest
    first), then the most unusual property when it passes the flags' cut-off without raising one,
    else an unusual combination of properties.

    ``near_percentile``/``far_percentile``: the percentile of the distance to the nearest few and
    to the k-th neighbour; ``property_z``: signed robust z-scores (n, len(PROPERTY_NAMES));
    ``combination_p``: the p-value of the property combination score, as "fused" reads it
    (:func:`core.analysis.anomalies.combination_p_values`); a reason from 1 - REASON_PERCENTILE /
    100 down, which a collection of alike images, whose scores sit at the chi-square bulk, never
    reaches.
    """
    out = []
    shared: dict[tuple[str, ...], tuple[str, ...]] = {}  # one object per distinct list: few at any size
    for row in range(len(near_percentile)):
        reasons: list[str] = []
        if near_percentile[row] >= REASON_PERCENTILE:
            reasons.append(FAR_FROM_NEIGHBOURS)
        elif far_percentile[row] >= REASON_PERCENTILE:
            reasons.append(FOREIGN_GROUP)
        raised = flags.of(row)
        reasons += [flag.name.replace("_", " ") for flag in raised]
        if not raised and property_z.size:
            j = int(np.argmax(np.abs(property_z[row])))
            z = float(property_z[row, j])
            if abs(z) >= flags.z_threshold:
                reasons.append(f"{'high' if z > 0 else 'low'} {PROPERTY_NAMES[j].replace('_', ' ')}")
            elif combination_p[row] <= 1.0 - REASON_PERCENTILE / 100.0:
                reasons.append(UNUSUAL_COMBINATION)
        found = tuple(reasons)
        out.append(shared.setdefault(found, found))
    return tuple(out)
