"""Review decisions on duplicates: a keep / remove switch per image, one-click decisions for a
whole cluster, keep rules previewed before they are applied, and an undo of the last change.

Every change goes through the facade, which checks the role and records who and when; each
returns a token, and the session keeps the latest one so "Undo" reverts exactly that change.
Changes run in widget callbacks, before the rerun they cause, so what the page shows next is read
after the change.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd
import streamlit as st

from core import (
    KEEP_RULES,
    Collection,
    DecisionBatch,
    DomainError,
    DuplicateGroup,
    DuplicateThresholds,
    KeepRulePlan,
)

DECISION_MARKS = {"keep": "✓ keep", "remove": "✗ remove"}
RULE_TEXT = {"resolution": "largest resolution", "earliest": "earliest arrival", "source": "a preferred source",
             "size": "largest file"}
UNDO_KEY = "dup-undo"  # the latest change of this session: an UndoSlot
PLAN_KEY = "dup-plan"  # the previewed keep rule: a PlanPreview


@dataclass(frozen=True)
class UndoSlot:
    token: str
    what: str  # what the change did, in the analyst's words


@dataclass(frozen=True)
class PlanPreview:
    plan: KeepRulePlan
    thresholds: DuplicateThresholds  # the clusters it was made for; moving a slider drops it


def _remember(batch: DecisionBatch, what: str) -> None:
    st.session_state[UNDO_KEY] = UndoSlot(batch.undo_token, what)


def _decide(current: Collection, changes: Mapping[str, str | None], what: str) -> None:
    try:
        _remember(current.decide_each(changes), what)
    except DomainError as exc:
        st.toast(f"Nothing was decided: {exc}")


def decision_switch(current: Collection, image_id: str, file_name: str, decision: str | None) -> None:
    """The image's decision as a two-way switch (click the chosen one again to clear it). Its value is
    set from ``decision`` on every run, so a keep rule or an undo shows at once."""
    key = f"dup-decision-{image_id}"
    st.session_state[key] = decision
    st.segmented_control("Decision", tuple(DECISION_MARKS), key=key, label_visibility="collapsed",
                         format_func=DECISION_MARKS.get, width="stretch", on_change=_switched,
                         args=(current, image_id, file_name, key))


def _switched(current: Collection, image_id: str, file_name: str, key: str) -> None:
    decision = st.session_state[key]
    _decide(current, {image_id: decision}, f"{decision or 'clear'} {file_name}")


def cluster_actions(current: Collection, group: DuplicateGroup) -> None:
    """A whole cluster in one click (each one change that Undo reverts): keep the representative and
    remove the others, keep them all (not duplicates), or clear the cluster's decisions."""
    ids = [m.image.image_id for m in group.members]
    name = f"cluster {group.cluster_id}"
    choices = {
        "Keep ★, remove the rest": ({i: "keep" if i == ids[0] else "remove" for i in ids}, f"keep ★ in {name}"),
        "Not duplicates: keep all": (dict.fromkeys(ids, "keep"), f"keep all of {name}"),
        "Clear": (dict.fromkeys(ids), f"clear {name}"),
    }
    for column, (label, (changes, what)) in zip(st.columns(len(choices)), choices.items(), strict=True):
        column.button(label, key=f"dup-cluster-{group.cluster_id}-{label}", width="stretch", on_click=_decide,
                      args=(current, changes, what))


def undo_button(current: Collection) -> None:
    last: UndoSlot | None = st.session_state.get(UNDO_KEY)
    st.button(f"Undo: {last.what}" if last else "Undo", key="dup-undo-button", disabled=last is None,
              help="Revert this session's latest decision change", on_click=_undo, args=(current,))


def _undo(current: Collection) -> None:
    last: UndoSlot = st.session_state.pop(UNDO_KEY)
    try:
        batch = current.undo_decisions(last.token)
    except DomainError as exc:
        st.toast(f"Nothing was undone: {exc}")
        return
    kept = f"; {batch.skipped} decided again since were left as they are" if batch.skipped else ""
    st.toast(f"Undone ({last.what}): {batch.images} decisions restored{kept}.")


def removal_button(current: Collection) -> None:
    """Admins: soft-delete the images marked ``remove``; they leave search, analysis, the map and
    these clusters at once, and stay stored (an admin can restore them)."""
    marked = [d.image_id for d in current.duplicates_to_remove()]
    st.button(f"Remove the images marked remove ({len(marked)})", key="dup-remove-marked", disabled=not marked,
              help="A soft delete: the images leave every page and stay restorable", on_click=_remove,
              args=(current, marked))


def _remove(current: Collection, image_ids: list[str]) -> None:
    try:
        removed = current.remove_images(image_ids)
    except DomainError as exc:
        st.toast(f"Nothing was removed: {exc}")
        return
    # the decisions an undo would restore now belong to images that left the clusters
    st.session_state.pop(UNDO_KEY, None)
    st.toast(f"{removed} images removed from the collection (restorable).")


def keep_rule_panel(current: Collection, thresholds: DuplicateThresholds, names: Mapping[str, str]) -> None:
    """Pick a rule, preview what it decides in every cluster, then apply exactly that preview."""
    rule_col, source_col, override_col = st.columns([2, 2, 2], vertical_alignment="bottom")
    rule = rule_col.selectbox("Keep the image with", tuple(KEEP_RULES), format_func=RULE_TEXT.get, key="dup-rule-name")
    source = (source_col.selectbox("Preferred source", current.sources(), key="dup-rule-source")
              if rule == "source" else None)
    override = override_col.checkbox("Re-decide images already decided", key="dup-rule-override")
    st.button("Preview", key="dup-rule-preview", on_click=_preview, args=(current, rule, thresholds, source, override))
    preview: PlanPreview | None = st.session_state.get(PLAN_KEY)
    if preview is None or preview.thresholds != thresholds or (preview.plan.rule, preview.plan.source,
                                                              preview.plan.override) != (rule, source, override):
        return
    changes = preview.plan.changes()
    if not changes:
        st.info("The rule changes nothing: every cluster is already decided as it would decide.")
        return
    removes = sum(d == "remove" for d in changes.values())
    left = sum(len(c.unchanged) for c in preview.plan.clusters)
    st.caption(f"Applying writes {len(changes)} decisions ({len(changes) - removes} keep, {removes} remove)"
               + (f"; {left} images already decided are left as they are." if left else "."))
    cluster_of = {i: c.cluster_id for c in preview.plan.clusters for i in (c.keep, *c.remove) if i}
    st.dataframe(pd.DataFrame([{"cluster": cluster_of[i], "file_name": names.get(i, i), "decision": d, "image_id": i}
                               for i, d in changes.items()]).sort_values(["cluster", "decision"]),
                 hide_index=True, width="stretch", height=min(36 * (len(changes) + 1), 300))
    st.button(f"Apply to {len(changes)} images", type="primary", key="dup-rule-apply", on_click=_apply,
              args=(current, preview.plan))


def _preview(current: Collection, rule: str, thresholds: DuplicateThresholds, source: str | None,
             override: bool) -> None:
    try:
        st.session_state[PLAN_KEY] = PlanPreview(current.preview_keep_rule(rule, thresholds, source,
                                                                           override=override), thresholds)
    except DomainError as exc:
        st.toast(f"No preview: {exc}")


def _apply(current: Collection, plan: KeepRulePlan) -> None:
    del st.session_state[PLAN_KEY]
    try:
        _remember(current.apply_keep_rule(plan), f"keep rule '{RULE_TEXT[plan.rule]}'")
    except DomainError as exc:
        st.toast(f"Nothing was applied: {exc}")
