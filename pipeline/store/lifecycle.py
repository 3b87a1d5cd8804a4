"""How a pattern's standing follows its evidence: strength, validation status, and the guard that
keeps embeddings from merging titles that differ in identifiers. Pure functions.

**Strength** is the lower bound of the Wilson score interval for the share of confirming evidence
(E. B. Wilson, "Probable inference, the law of succession, and statistical inference", JASA 22,
1927; the usual ranking rule of E. Miller, "How Not To Sort By Average Rating", 2009):

    p = positives / n,  positives = 1 + confirmations (its own extraction counts once),
    n = positives + contradictions,
    strength = (p + z²/2n - z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n),   z = 1.96 (95 %).

It grows with independent sightings (seen once: 0.21, twice: 0.34, 5 times: 0.57, 20 times:
0.84), falls with contradictions, and a pattern seen once ranks below one seen often even at
the same share.

**Status**: ``pending`` until ``validation_min_confirmations`` confirmations, then ``validated``;
``contradicted`` once contradictions reach ``contradiction_share`` of all evidence (with at least
one contradiction), whatever the confirmations.
"""

from __future__ import annotations

import math
import re

from pipeline.db.status import ValidationStatus

#: z for a 95 % two-sided interval.
WILSON_Z = 1.96

#: Tokens that name one thing among many: error codes (TS2322, E501), issue and pull request
#: numbers (#5688), versions (2.1.0, v5), and any other word with a digit in it.
_IDENTIFIER = re.compile(r"#\d+|\b[\w.-]*\d[\w.-]*\b")


def wilson_lower_bound(positives: int, n: int, z: float = WILSON_Z) -> float:
    """Lower bound of the Wilson score interval of ``positives`` out of ``n`` (0 when ``n`` is
    0), rounded to 4 decimals."""
    if n <= 0:
        return 0.0
    p = positives / n
    centre = p + z * z / (2 * n)
    margin = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return round((centre - margin) / (1 + z * z / n), 4)


def pattern_strength(confirmations: int, contradictions: int) -> float:
    """A pattern's strength in [0, 1] (module docstring): the Wilson lower bound with its own
    extraction counted as one confirmation."""
    positives = 1 + max(0, confirmations)
    return wilson_lower_bound(positives, positives + max(0, contradictions))


def validation_status(
    confirmations: int, contradictions: int, *, min_confirmations: int, contradiction_share: float
) -> ValidationStatus:
    """``contradicted`` when contradictions reach ``contradiction_share`` of the evidence
    (confirmations + contradictions + its own extraction), else ``validated`` from
    ``min_confirmations`` confirmations, else ``pending``."""
    evidence = 1 + confirmations + contradictions
    if contradictions > 0 and contradictions / evidence >= contradiction_share:
        return ValidationStatus.CONTRADICTED
    if confirmations >= min_confirmations:
        return ValidationStatus.VALIDATED
    return ValidationStatus.PENDING


def identifiers(title: str) -> frozenset[str]:
    """The identifier-like tokens of a title, lower-cased (``"Fix TS2322 in #5688"`` →
    ``{"ts2322", "#5688"}``)."""
    return frozenset(token.lower() for token in _IDENTIFIER.findall(title))


def may_merge_by_embedding(title: str, other: str) -> bool:
    """Whether two titles may be merged on embedding distance alone: only when they name the same
    identifiers. ``TS2322`` vs ``TS2345``, ``#5688`` vs ``#5689`` or ``2.1.0`` vs ``2.2.0`` embed
    close together but are different things."""
    return identifiers(title) == identifiers(other)
