"""Review decisions on duplicates and the keep rules that propose them.

A decision (``keep`` or ``remove``) belongs to an image id, never to a cluster: a cluster's number
changes when a threshold moves, an image's id does not. Keep rules decide every duplicate cluster at
once; they only *propose* (a :class:`KeepRulePlan`), and the analyst applies the plan or not.

Each rule is one function from a candidate to a sort key, smaller is better. Ties are broken by the
other rules in :data:`TIEBREAK` order (largest resolution, then largest file, then earliest arrival)
and finally by image id, so a plan is the same however often it is previewed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from core.errors import InvalidRequest

KEEP = "keep"
REMOVE = "remove"
DECISIONS = (KEEP, REMOVE)


@dataclass(frozen=True)
class Decision:
    """An image's current review decision and who made it when (seconds since the epoch)."""

    image_id: str
    decision: str  # keep | remove
    decided_by: str
    decided_at: float


@dataclass(frozen=True)
class DecisionEvent:
    """One change of a decision, as the history keeps it."""

    image_id: str
    decision: str | None  # None: cleared
    decided_by: str
    decided_at: float
    batch: str  # the call that made it; undo_decisions(batch) reverts the whole call
    previous: str | None


@dataclass(frozen=True)
class DecisionBatch:
    """What a decide, a keep rule or an undo changed; ``undo_token`` reverts it."""

    undo_token: str
    images: int  # images whose decision was written
    skipped: int = 0  # undo only: images decided again since, left as they are


@dataclass(frozen=True)
class Removal:
    """A soft delete: who removed the image and when."""

    image_id: str
    removed_by: str
    removed_at: float


class _Label(Protocol):
    label: str
    labelled_by: str
    labelled_at: float


@dataclass(frozen=True)
class ReviewState:
    """What analysts said about one image: label, decision and soft delete, each with who and when
    (seconds since the epoch); ``None`` where there is none."""

    visible: bool  # False: soft-deleted (restorable)
    label: str | None = None
    labelled_by: str | None = None
    labelled_at: float | None = None
    decision: str | None = None
    decided_by: str | None = None
    decided_at: float | None = None
    removed_by: str | None = None
    removed_at: float | None = None

    @classmethod
    def of(cls, visible: bool, label: _Label | None, decision: Decision | None, removal: Removal | None
           ) -> ReviewState:
        return cls(
            visible,
            label and label.label, label and label.labelled_by, label and label.labelled_at,
            decision and decision.decision, decision and decision.decided_by, decision and decision.decided_at,
            removal and removal.removed_by, removal and removal.removed_at,
        )


@dataclass(frozen=True)
class ImageReview:
    """One row of the reviews export: an image with a label, a decision or a soft delete."""

    image_id: str
    file_name: str
    source: str
    review: ReviewState


@dataclass(frozen=True)
class KeepCandidate:
    """What the keep rules compare about one member of a cluster."""

    image_id: str
    width: int
    height: int
    size_bytes: int
    created_at: float  # first arrival
    sources: frozenset[str]  # every source label it arrived under


def largest_resolution(candidate: KeepCandidate, _source: str | None) -> float:
    return -candidate.width * candidate.height


def earliest_arrival(candidate: KeepCandidate, _source: str | None) -> float:
    return candidate.created_at


def preferred_source(candidate: KeepCandidate, source: str | None) -> float:
    return 0 if source in candidate.sources else 1


def largest_file(candidate: KeepCandidate, _source: str | None) -> float:
    return -candidate.size_bytes


KEEP_RULES: dict[str, Callable[[KeepCandidate, str | None], float]] = {
    "resolution": largest_resolution,
    "earliest": earliest_arrival,
    "source": preferred_source,
    "size": largest_file,
}
TIEBREAK = ("resolution", "size", "earliest")


def check_rule(rule: str, source: str | None) -> None:
    if rule not in KEEP_RULES:
        raise InvalidRequest("rule", f"{rule!r} is not one of {', '.join(KEEP_RULES)}")
    if rule == "source" and not source:
        raise InvalidRequest("source", "the 'source' rule needs the preferred source label")


def best_first(candidates: Sequence[KeepCandidate], rule: str, source: str | None) -> list[KeepCandidate]:
    """``candidates`` ordered by ``rule``, ties broken by :data:`TIEBREAK`, then by id."""
    chain = [KEEP_RULES[rule]] + [KEEP_RULES[r] for r in TIEBREAK if r != rule]
    return sorted(candidates, key=lambda c: (*(f(c, source) for f in chain), c.image_id))


@dataclass(frozen=True)
class ClusterKeepPlan:
    """One cluster under a keep rule: the image kept, those to remove, those left as decided."""

    cluster_id: int
    keep: str | None  # None when every member was already decided and left alone
    remove: tuple[str, ...]
    unchanged: tuple[str, ...]  # already decided, left alone (``override`` not asked)


@dataclass(frozen=True)
class KeepRulePlan:
    """A keep rule over every duplicate cluster, to be confirmed with ``apply_keep_rule``."""

    rule: str
    source: str | None
    override: bool
    clusters: tuple[ClusterKeepPlan, ...]
    previous: Mapping[str, str | None]  # decisions of the images it changes, as seen at preview

    def changes(self) -> dict[str, str]:
        """The decisions applying the plan writes, by image id."""
        found: dict[str, str] = {}
        for cluster in self.clusters:
            if cluster.keep is not None and cluster.keep not in cluster.unchanged:
                found[cluster.keep] = KEEP
            found.update(dict.fromkeys(cluster.remove, REMOVE))
        return {i: d for i, d in found.items() if self.previous.get(i) != d}


def plan_cluster(cluster_id: int, members: Sequence[KeepCandidate], decided: Mapping[str, str], rule: str,
                 source: str | None, override: bool) -> ClusterKeepPlan:
    """The rule's proposal for one cluster. Without ``override``, members already decided keep their
    decision; a member already marked ``keep`` stays the kept one, else the best undecided member is
    kept, and the other undecided members are removed. With ``override`` every member is re-decided."""
    unchanged = () if override else tuple(m.image_id for m in members if m.image_id in decided)
    ranked = best_first(members, rule, source)
    kept_already = [m.image_id for m in ranked if m.image_id in unchanged and decided[m.image_id] == KEEP]
    open_ = [m.image_id for m in ranked if m.image_id not in unchanged]
    keep = kept_already[0] if kept_already else (open_[0] if open_ else None)
    remove = tuple(i for i in open_ if i != keep)
    return ClusterKeepPlan(cluster_id, keep, remove, unchanged)
