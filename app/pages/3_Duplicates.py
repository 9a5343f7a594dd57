"""Duplicates: the calibrated similarity slider with its histogram and the pairs just inside and
just outside it, the pHash and crop controls and the rule; clusters largest first, filterable by
signal, representative marked and weakest link shown; a pair inspector; CSV export.

The controls and everything they change live in one fragment: moving a slider reruns that part
only, and core answers from the analysis it cached for this collection version.
"""

from __future__ import annotations

import streamlit as st

from core import (
    CROP_FLOOR,
    DUPLICATE_RULES,
    DUPLICATE_SIGNALS,
    HAMMING_MAX,
    SIMILARITY_FLOOR,
    Collection,
    DuplicateGroup,
    DuplicateLink,
    DuplicateThresholds,
)
from shared import acting_collection, csv_download, empty_collection
from widgets.charts import threshold_histogram
from widgets.grid import COLUMNS, page_of, thumbnail_source

CLUSTERS_PER_PAGE = 5
EXAMPLES = 3
RULE_HELP = ("either: a pair is a duplicate when the embedding or the pHash says so (and the other one "
             "roughly agrees); both: only when both say so.")
INSPECT_WIDTH = 420

current = acting_collection("duplicates", "Duplicates")


def thresholds_controls() -> DuplicateThresholds:
    defaults = DuplicateThresholds()
    sim, bits, pixels, crop, rule = st.columns(5)
    return DuplicateThresholds(
        similarity=sim.slider("Similarity (calibrated: 1 = identical)", SIMILARITY_FLOOR, 1.0, defaults.similarity,
                              0.005, key="dup-similarity"),
        hamming=bits.slider("pHash distance (bits)", 0, HAMMING_MAX, defaults.hamming, key="dup-hamming"),
        pixels=pixels.slider("Pixels agree (correlation that confirms a pair)", 0.5, 1.0, defaults.pixels, 0.01,
                             key="dup-pixels"),
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
    for index, link in enumerate(links):
        left, right, about = st.columns([1, 1, 3], vertical_alignment="center")
        left.image(thumbnail_source(current, link.left), width="stretch")
        right.image(thumbnail_source(current, link.right), width="stretch")
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


def member_caption(group: DuplicateGroup, index: int) -> str:
    member = group.members[index]
    if member.is_representative:
        return "★ representative"
    crop = "" if member.crop_score is None else f" · crop {member.crop_score:.2f}"
    return (f"sim {member.similarity_to_representative:.3f} · pHash {member.phash_distance}{crop} · "
            f"{'+'.join(member.signals) or 'via others'}")


def cluster_card(group: DuplicateGroup) -> None:
    with st.container(border=True):
        kind = "exact" if group.exact else "near"
        st.markdown(f"**Cluster {group.cluster_id}**: {len(group.members)} images, {kind} duplicates")
        st.caption(f"Weakest link: {link_text(group.weakest_link)}")
        representative = group.members[0].image.image_id
        for start in range(0, len(group.members), COLUMNS):
            shown = range(start, min(start + COLUMNS, len(group.members)))
            for column, index in zip(st.columns(COLUMNS), shown, strict=False):
                member = group.members[index]
                column.image(thumbnail_source(current, member.image.image_id), width="stretch")
                column.text(member.image.file_name)
                column.caption(member_caption(group, index))
                if not member.is_representative and column.button(
                        "Inspect", key=f"dup-inspect-{group.cluster_id}-{index}"):
                    inspect_pair(representative, member.image.image_id, member_caption(group, index))


@st.fragment
def review(current: Collection) -> None:
    thresholds = thresholds_controls()
    view = current.duplicates(thresholds)
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
    signals = st.multiselect("Only clusters matched by", DUPLICATE_SIGNALS, key="dup-signals")
    groups = [g for g in view.groups if not signals or any(set(m.signals) & set(signals) for m in g.members)]
    metrics = st.columns([1, 1, 1, 2], vertical_alignment="bottom")
    metrics[0].metric("Clusters", len(groups))
    metrics[1].metric("In clusters", sum(len(g.members) for g in groups))
    metrics[2].metric("Duplicate pairs", view.pair_count)
    with metrics[3]:
        csv_download("Export clusters as CSV", [r for r in view.rows() if r["cluster_id"] in
                                                 {g.cluster_id for g in groups}], "duplicates.csv", key="dup-csv")
    if not groups:
        st.info("No duplicates at these thresholds: lower the similarity or raise the pHash distance to find more.")
    for index in page_of(len(groups), "dup-clusters", CLUSTERS_PER_PAGE):
        cluster_card(groups[index])


if not empty_collection(current):
    review(current)
