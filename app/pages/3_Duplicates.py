"""Duplicates: the calibrated similarity slider with its histogram and the pairs just inside and
just outside it, the pHash and crop controls and the rule; clusters largest first, filterable by
signal, representative marked and weakest link shown; a pair inspector; keep / remove decisions per
image and per cluster, keep rules previewed then applied, undo, "next undecided cluster" and review
progress (role permitting: a viewer sees the decisions, not the controls); CSV export with decisions.

The controls and everything they change live in one fragment: moving a slider reruns that part
only, and core answers from the analysis it cached for this collection version.
"""

from __future__ import annotations

from collections.abc import Mapping

import streamlit as st

from core import (
    CROP_FLOOR,
    DUPLICATE_RULES,
    DUPLICATE_SIGNALS,
    HAMMING_MAX,
    SIMILARITY_FLOOR,
    Action,
    Collection,
    DuplicateGroup,
    DuplicateLink,
    DuplicatesView,
    DuplicateThresholds,
)
from shared import acting_collection, csv_download, empty_collection, may
from widgets.charts import threshold_histogram
from widgets.decisions import cluster_actions, decision_switch, keep_rule_panel, removal_button, undo_button
from widgets.grid import COLUMNS, page_key, page_of

CLUSTERS_PER_PAGE = 5
EXAMPLES = 3
RULE_HELP = ("either: a pair is a duplicate when the embedding or the pHash says so (and the other one "
             "roughly agrees); both: only when both say so.")
CLOSE_LOOK_HELP = ("Pairs whose pictures agree as a whole are compared up close, from their thumbnails: "
                   "how much they differ in the place they differ most. Lower keeps fewer pairs: icons that share "
                   "a template but differ in one emblem or letter are not copies. This is the most allowed where "
                   "the pHashes agree; each bit they are apart allows {per_bit} less.")
DETAIL_HELP = ("Pairs compared up close must also agree in their fine details (strokes, dots, edges; the "
               "correlation of what is left once each picture's local mean is taken away). Icons that share a "
               "silhouette, a dice and a knob, pass the close look but not this. Pictures with too little fine "
               "detail (soft shapes, heavily compressed photos) skip it; -1 turns it off.")
INSPECT_WIDTH = 420
FOCUS_KEY = "dup-focus"  # the cluster "Next undecided" went to

current = acting_collection("duplicates", "Duplicates")
may_decide = may(current, Action.DECIDE)


def thresholds_controls() -> DuplicateThresholds:
    defaults = DuplicateThresholds()
    sim, bits, crop, rule = st.columns(4)
    pixels, close, detail, _ = st.columns(4)  # the confirmations: seven controls in one row cut labels at 1024 px
    return DuplicateThresholds(
        similarity=sim.slider("Similarity (calibrated: 1 = identical)", SIMILARITY_FLOOR, 1.0, defaults.similarity,
                              0.005, key="dup-similarity"),
        hamming=bits.slider("pHash distance (bits)", 0, HAMMING_MAX, defaults.hamming, key="dup-hamming"),
        pixels=pixels.slider("Pixels agree (correlation that confirms a pair)", 0.5, 1.0, defaults.pixels, 0.01,
                             key="dup-pixels"),
        local_difference=close.slider("Close look (most local difference)", 0.25, 3.0, defaults.local_difference,
                                      0.05, key="dup-local",
                                      help=CLOSE_LOOK_HELP.format(per_bit=defaults.local_difference_per_bit)),
        detail_agreement=detail.slider("Fine details agree (least correlation)", -1.0, 1.0, defaults.detail_agreement,
                                       0.05, key="dup-detail", help=DETAIL_HELP),
        crop=crop.slider("Crop correlation (above 1: crops off)", CROP_FLOOR, 1.01, defaults.crop, 0.01,
                         key="dup-crop"),
        rule=rule.selectbox("Rule", DUPLICATE_RULES, key="dup-rule", help=RULE_HELP),
    )


def link_text(link: DuplicateLink) -> str:
    crop = "" if link.crop_score is None else f", crop {link.crop_score:.3f}"
    return (f"similarity {link.similarity:.3f}, cosine {link.cosine:.4f}, pHash {link.phash_distance} bits"
            f"{crop}; signals: {', '.join(link.signals) or 'none'}")


def example_pairs(title: str, links: list[DuplicateLink], key: str) -> None:
    st.caption(title)
    if not links:
        st.text("none")
    thumbnails = current.thumbnail_sources([i for link in links for i in (link.left, link.right)])
    for index, link in enumerate(links):
        left, right, about = st.columns([1, 1, 3], vertical_alignment="center")
        for column, image_id in ((left, link.left), (right, link.right)):
            if image_id in thumbnails:
                column.image(thumbnails[image_id], width="stretch")
        about.text(link_text(link))
        if about.button("Inspect", key=f"{key}-{index}"):
            inspect_pair(link.left, link.right, link_text(link))


@st.dialog("Pair inspector", width="large")
def inspect_pair(left_id: str, right_id: str, evidence: str) -> None:
    """Both images at the same scale, where they differ when aligned, and what matched."""
    records = {r.id: r for r in current.images([left_id, right_id])}
    if len(records) < 2:
        st.error("One of the two images is no longer in the collection.")
        return
    left, right = records[left_id], records[right_id]
    scale = INSPECT_WIDTH / max(left.width, right.width)
    columns = st.columns(3)
    for column, record in zip(columns, (left, right), strict=False):
        column.image(current.original(record.id), width=max(1, round(record.width * scale)))
        column.text(record.file_name)
        column.caption(f"{record.width} x {record.height} {record.format}, {record.size_bytes / 1024:.1f} KiB, "
                       f"source {record.source}")
    difference = current.pair_difference(left_id, right_id)
    if difference is None:
        columns[2].info("Different shapes (a crop or a reframing): no pixel difference to show.")
    else:
        columns[2].image(difference, caption="Difference (black = equal)", width="stretch")
    st.text(evidence)


def member_caption(group: DuplicateGroup, index: int, decision: str | None) -> str:
    member = group.members[index]
    decided = f" · {decision}" if decision and not may_decide else ""  # analysts see it on the switch
    if member.is_representative:
        return "★ representative" + decided
    crop = "" if member.crop_score is None else f" · crop {member.crop_score:.2f}"
    return (f"sim {member.similarity_to_representative:.3f} · pHash {member.phash_distance}{crop} · "
            f"{'+'.join(member.signals) or 'via others'}{decided}")


def cluster_card(group: DuplicateGroup, decisions: Mapping[str, str], thumbnails: Mapping[str, bytes | str]) -> None:
    with st.container(border=True):
        kind = "exact" if group.exact else "near"
        decided = sum(m.image.image_id in decisions for m in group.members)
        mark = "▶ " if group.cluster_id == st.session_state.get(FOCUS_KEY) else ""
        st.markdown(f"{mark}**Cluster {group.cluster_id}**: {len(group.members)} images, {kind} duplicates · "
                    f"{decided} of {len(group.members)} decided")
        st.caption(f"Weakest link: {link_text(group.weakest_link)}")
        if may_decide:
            cluster_actions(current, group)
        representative = group.members[0].image.image_id
        for start in range(0, len(group.members), COLUMNS):
            shown = range(start, min(start + COLUMNS, len(group.members)))
            for column, index in zip(st.columns(COLUMNS), shown, strict=False):
                member = group.members[index]
                image_id = member.image.image_id
                if image_id in thumbnails:
                    column.image(thumbnails[image_id], width="stretch")
                column.text(member.image.file_name)
                column.caption(member_caption(group, index, decisions.get(image_id)))
                with column:
                    if may_decide:
                        decision_switch(current, image_id, member.image.file_name, decisions.get(image_id))
                    if not member.is_representative and st.button(
                            "Inspect", key=f"dup-inspect-{group.cluster_id}-{index}"):
                        inspect_pair(representative, image_id, member_caption(group, index, None))


def turn_to_next_undecided(undecided: list[tuple[int, int]]) -> None:
    """Go to the first undecided cluster after the one gone to last (else from the first on the page
    shown), from the start again past the end: show its page and mark its card. ``undecided``:
    (position in the list shown, cluster id)."""
    key = page_key("dup-clusters")
    last = next((p for p, c in undecided if c == st.session_state.get(FOCUS_KEY)), None)
    after = last + 1 if last is not None else (st.session_state.get(key, 1) - 1) * CLUSTERS_PER_PAGE
    position, cluster = next(((p, c) for p, c in undecided if p >= after), undecided[0])
    st.session_state[key] = position // CLUSTERS_PER_PAGE + 1
    st.session_state[FOCUS_KEY] = cluster


def decision_tools(view: DuplicatesView, thresholds: DuplicateThresholds) -> None:
    """Undo and the keep rules, for the roles that decide; removal of the images marked remove for
    the roles that delete."""
    undo, remove = st.columns(2)
    with undo:
        undo_button(current)
    if may(current, Action.DELETE):
        with remove:
            removal_button(current)
    with st.expander("Keep rules: decide every cluster at once"):
        names = {m.image.image_id: m.image.file_name for g in view.groups for m in g.members}
        keep_rule_panel(current, thresholds, names)


@st.fragment
def review(current: Collection) -> None:
    thresholds = thresholds_controls()
    view = current.duplicates(thresholds)
    if view.hamming_searched < HAMMING_MAX:
        searched = (f"every pair within {view.hamming_searched} pHash bits is compared" if view.hamming_searched >= 0
                    else "no pair is compared by pHash alone (too many images share a hash)")
        st.caption(f"At {view.images:,} images {searched}; pHash pairs further apart are judged where an image's "
                   "most similar sketches, its nearest neighbours or the crop search propose them.")
    if view.scale.histogram_edges:
        threshold_histogram(view.scale.histogram_edges, view.scale.histogram_counts, thresholds.similarity,
                            x_title="similarity to the nearest image (calibrated)", y_title="images",
                            key="dup-histogram")
    with st.expander("Pairs just inside and just outside the thresholds"):
        signal = st.segmented_control("Threshold", ("cosine", "phash", "crop"), default="cosine",
                                      key="dup-example-signal") or "cosine"
        inside, outside = current.duplicate_examples(signal, thresholds, count=EXAMPLES)
        example_pairs("Just inside (duplicates)", inside, "dup-inside")
        example_pairs("Just outside (not duplicates)", outside, "dup-outside")
    if may_decide:
        decision_tools(view, thresholds)
    signals = st.multiselect(
        "Only clusters matched by", DUPLICATE_SIGNALS, key="dup-signals",
        help="same_bytes / same_pixels: exact copies. phash: hashes within the pHash bits. sketch: hashes "
             f"further apart than {HAMMING_MAX} bits (a brightened transparent icon), the pictures alike up close. "
             "crop: one is a window of the other. cosine: the embedding finds them alike. phash+cosine: both "
             "moderately. Every signal but the exact ones is confirmed by the pictures.")
    # three controls to a row and short metric labels: nothing is cut off at 1024 px wide
    only_col, next_col, export_col = st.columns([1, 1, 1.6], vertical_alignment="center")
    only_open = only_col.toggle("Undecided only", key="dup-undecided-only")
    groups = [g for g in view.groups if not signals or any(set(m.signals) & set(signals) for m in g.members)]
    if only_open:
        groups = [g for g in groups if not view.is_decided(g)]
    undecided = [(p, g.cluster_id) for p, g in enumerate(groups) if not view.is_decided(g)]
    next_col.button("Next undecided", key="dup-next", disabled=not undecided, width="stretch",
                    help="Go to the next cluster with an image not yet decided",
                    on_click=turn_to_next_undecided, args=(undecided,))
    with export_col:
        shown = {g.cluster_id for g in groups}
        csv_download("Export clusters as CSV", [r for r in view.rows() if r["cluster_id"] in shown],
                     "duplicates.csv", key="dup-csv")
    metrics = st.columns(4)
    metrics[0].metric("Clusters", len(groups))
    metrics[1].metric("Decided", len(groups) - len(undecided), help="Clusters whose every image is decided")
    metrics[2].metric("Images", sum(len(g.members) for g in groups), help="Images in the clusters shown")
    metrics[3].metric("Pairs", view.pair_count, help="Duplicate pairs at these thresholds")
    if not groups:
        st.info("No duplicates at these thresholds: lower the similarity or raise the pHash distance to find more."
                if not only_open else "Every cluster shown is decided.")
    page = [groups[index] for index in page_of(len(groups), "dup-clusters", CLUSTERS_PER_PAGE)]
    thumbnails = current.thumbnail_sources([m.image.image_id for g in page for m in g.members])
    for group in page:
        cluster_card(group, view.decisions, thumbnails)


if not empty_collection(current):
    review(current)
