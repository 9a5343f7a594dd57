"""``visual-anomaly``: the command line, a thin caller of :class:`core.collection.Collection`.

Every command takes ``--json`` and then prints exactly one JSON object on stdout; progress and
messages go to stderr. The CLI runs on the machine that holds the data and acts as its local admin
(the OS user, role admin) unless ``--as-user`` names a catalog user. Errors a user can fix (a domain
error, configuration, missing weights) end with one sentence on stderr and the error's exit status,
never a traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path

from core import (
    ANOMALY_COLUMNS,
    DEFAULT_ANOMALY_METHOD,
    DEFAULT_Z,
    DUPLICATE_COLUMNS,
    FLAG_NAMES,
    ISSUE_COLUMNS,
    KEEP_RULES,
    METHODS,
    Collection,
    CollectionStatus,
    DomainError,
    DuplicateThresholds,
    IngestReport,
    InvalidRequest,
    KeepRulePlan,
    ModelUnavailable,
    Role,
    SearchFilter,
    Settings,
    SettingsError,
    Shard,
    csv_chunks,
    printable,
)
from core.health import check_servers
from core.observability import configure_logging
from core.reports import iso_time
from core.users import INITIAL_PASSWORD_FILE

REVIEW_COLUMNS = ["image_id", "file_name", "source", "visible", "label", "labelled_by", "labelled_at", "decision",
                  "decided_by", "decided_at", "removed_by", "removed_at"]
# Expected failures, shown as one sentence; DomainError carries its own exit status.
USER_ERRORS = (DomainError, SettingsError, ModelUnavailable, FileNotFoundError)


def _say(*lines: str) -> None:
    """Print lines for people, each through the one sanitiser: names may hold newlines or ESC sequences."""
    for line in lines:
        print(printable(line))


def _print_json(data: object) -> None:
    json.dump(data, sys.stdout, indent=None, default=str)
    sys.stdout.write("\n")


def _progress_bar(total_hint: str, enabled: bool) -> tuple[Callable[[int, int], None], Callable[[], None]]:
    """A tqdm bar on stderr (only on a terminal), as a progress callback and a closer."""
    if not enabled:
        return (lambda _done, _total: None), (lambda: None)
    from tqdm import tqdm

    bar = tqdm(desc=total_hint, unit="img", file=sys.stderr, dynamic_ncols=True)

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    return update, bar.close


def cmd_ingest(collection: Collection, args: argparse.Namespace) -> int:
    update, close = _progress_bar("ingest", sys.stderr.isatty() and not args.json)
    try:
        report = collection.ingest(args.paths, source=args.source, progress=update, shard=args.shard)
    finally:
        close()
    if args.json:
        _print_json(report.to_json())
    else:
        _print_ingest_summary(report)
    return 1 if report.error else 0


def _print_ingest_summary(report: IngestReport) -> None:
    total = len(report.outcomes)
    _say(
        f"{total} files in {report.seconds:.1f} s: {report.ingested} ingested, "
        f"{report.already_present} already present (same bytes), {len(report.rejected)} rejected"
        + (f", {len(report.failed)} failed" if report.failed else "")
    )
    for outcome in report.rejected:
        _say(f"  rejected {outcome.file}: {outcome.reason}")
    for outcome in report.outcomes:
        if outcome.nearest is not None and outcome.nearest.verdict != "none":
            _say(f"  {outcome.nearest.verdict} duplicate of {outcome.nearest.image_id}: {outcome.file} "
                  f"({'+'.join(outcome.nearest.signals)})")
    if report.error:
        _say(f"Stopped: {report.error}. Nothing of the failed batch was kept; fix the store and run the same command again.")


def cmd_status(collection: Collection, args: argparse.Namespace) -> int:
    status = collection.status()
    if args.json:
        _print_json(status.to_json())
    else:
        _print_status(status)
    return 0


def _print_status(status: CollectionStatus) -> None:
    _say(f"acting as {status.acting_as['name']} ({status.acting_as['role']})")
    _say(f"images   {status.images}" + (f"  ({status.pending} pending: re-run the ingest or `visual-anomaly repair`)" if status.pending else ""))
    _say(f"vectors  {status.vectors}")
    _say(f"blobs    {status.blobs} originals, {status.thumbnails} thumbnails")
    _say(f"version  {status.version}   consistent: {'yes' if status.consistent else 'NO'}")
    if not status.cache_healthy:
        _say("cache    unreachable: everything works, slower")
    for store, where in status.backends.items():
        _say(f"{store:8} {where}")
    model = status.model
    _say(f"model    {model['name']}, weights: {model['weights']}, device: {model['device']}, precision: {model['precision']}")


def cmd_search(collection: Collection, args: argparse.Namespace) -> int:
    filters = SearchFilter(
        sources=tuple(args.source or ()), uploaders=tuple(args.uploader or ()), formats=tuple(args.format or ())
    )
    image = Path(args.image).read_bytes() if args.image else None
    response = collection.search(
        text=args.text, image=image, image_id=args.similar_to, k=args.k, min_score=args.min_score, filters=filters
    )
    rows = [asdict(r) for r in response.results]
    if args.json:
        _print_json({"query": response.query, "seconds": round(response.seconds, 4), "results": rows})
    else:
        _say(f"{len(rows)} results for {response.query}")
        for rank, r in enumerate(response.results, 1):
            _say(f"{rank:3}. {r.score:.4f}  {r.image_id}  {r.file_name}  [{r.source}]")
    return 0


def _write_csv(path: str, rows: list[dict], columns: Sequence[str]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        handle.writelines(csv_chunks(rows, columns))


def cmd_duplicates(collection: Collection, args: argparse.Namespace) -> int:
    thresholds = DuplicateThresholds(rule=args.rule, hamming=args.hamming, crop=args.crop)
    if args.cosine is not None:  # a raw cosine, translated to this collection's calibrated scale
        scale = collection.duplicates(thresholds).scale
        thresholds = replace(thresholds, similarity=float(scale.similarity(args.cosine)))
    elif args.similarity is not None:
        thresholds = replace(thresholds, similarity=args.similarity)
    view = collection.duplicates(thresholds)
    rows = view.rows()
    if args.csv:
        _write_csv(args.csv, rows, DUPLICATE_COLUMNS)
    if args.json:
        _print_json(
            {
                "thresholds": asdict(view.thresholds),
                "scale": {"reference_cosine": view.scale.reference_cosine, "reference_rank": view.scale.reference_rank},
                "clusters": view.cluster_count,
                "pairs": view.pair_count,
                "images": view.images,
                "rows": rows,
                "same_bytes": [{"image_id": e.image_id, "files": [f for f, _ in e.files]} for e in view.same_bytes],
            }
        )
    else:
        t = view.thresholds
        _say(
            f"{len(view.groups)} duplicate clusters ({sum(len(g.members) for g in view.groups)} images of {view.images}) "
            f"at similarity >= {t.similarity:g} ({t.rule}) pHash <= {t.hamming} bits, crop >= {t.crop:g}"
        )
        for group in view.groups:
            kind = "exact" if group.exact else "near"
            _say(f"  cluster {group.cluster_id} ({kind}, weakest link {group.weakest_link.similarity:.3f}):")
            for m in group.members:
                mark = "*" if m.is_representative else " "
                _say(f"    {mark} {m.image.file_name}  sim {m.similarity_to_representative:.3f}  "
                      f"pHash {m.phash_distance}" + (f"  crop {m.crop_score:.3f}" if m.crop_score is not None else "")
                      + f"  {'+'.join(m.signals)}")
        if view.same_bytes:
            _say(f"{len(view.same_bytes)} images arrived as several byte-identical files (stored once):")
            for entry in view.same_bytes:
                _say("    " + "  =  ".join(f for f, _ in entry.files))
        if args.csv:
            _say(f"Wrote {len(rows)} rows to {args.csv}")
    return 0


def cmd_anomalies(collection: Collection, args: argparse.Namespace) -> int:
    view = collection.anomalies(
        method=args.method, k=args.k, threshold=args.threshold, top=args.top, contamination=args.contamination,
        z_threshold=args.z,
    )
    rows = view.to_rows()
    if args.csv:
        _write_csv(args.csv, rows, ANOMALY_COLUMNS)
    if args.json:
        _print_json({"method": view.method, "k": view.k, "selected": len(view.selected), "rows": rows})
    else:
        shown = view.selected or list(view.rows[:20])
        _say(f"{len(view.rows)} images scored with {view.method}" + (f" (k={view.k})" if view.k else "")
              + (f"; {len(view.selected)} selected" if view.selected else "; the 20 most unusual:"))
        for r in shown:
            _say(f"  {r.rank:5}. {r.score:.4f}  p{r.percentile:5.1f}  {r.image.file_name}  [{r.image.source}]"
                  + (f"  label={r.label}" if r.label else "") + (f"  ({'; '.join(r.reasons)})" if r.reasons else ""))
        if args.csv:
            _say(f"Wrote {len(rows)} rows to {args.csv}")
    return 0


def cmd_issues(collection: Collection, args: argparse.Namespace) -> int:
    view = collection.issues(flag=args.flag, z_threshold=args.z)
    rows = view.to_rows()
    if args.csv:
        _write_csv(args.csv, rows, ISSUE_COLUMNS)
    if args.json:
        _print_json({"z_threshold": view.z_threshold, "images": view.images, "rows": rows})
    else:
        flagged = len({r.image.image_id for r in view.rows})
        _say(f"{flagged} of {view.images} images flagged (robust z-score >= {view.z_threshold:g} against the "
              "collection)")
        for name in FLAG_NAMES:
            found = [r for r in view.rows if r.flag == name]
            if found:
                _say(f"  {name} ({len(found)}): {found[0].explanation}")
                for r in found:
                    _say(f"    {r.image.file_name}  [{r.image.source}]  {r.property} {r.value:.4g} (z {r.z:+.1f})")
        if args.csv:
            _say(f"Wrote {len(rows)} rows to {args.csv}")
    return 0


def cmd_label(collection: Collection, args: argparse.Namespace) -> int:
    label = None if args.label == "clear" else args.label
    collection.label(args.image_id, label)
    if args.json:
        _print_json({"image_id": args.image_id, "label": label})
    else:
        _say(f"{args.image_id}: {label or 'label cleared'}")
    return 0


def cmd_decide(collection: Collection, args: argparse.Namespace) -> int:
    decision = None if args.decision == "clear" else args.decision
    batch = collection.decide(args.image_ids, decision)
    if args.json:
        _print_json(asdict(batch) | {"decision": decision})
    else:
        _say(f"{batch.images} image(s): {decision or 'decision cleared'} (undo: visual-anomaly undo-decisions "
              f"{batch.undo_token})")
    return 0


def cmd_keep_rule(collection: Collection, args: argparse.Namespace) -> int:
    thresholds = DuplicateThresholds(rule=args.rule_combine, hamming=args.hamming, crop=args.crop)
    if args.similarity is not None:
        thresholds = replace(thresholds, similarity=args.similarity)
    plan = collection.preview_keep_rule(args.rule, thresholds, args.source, override=args.override)
    batch = collection.apply_keep_rule(plan) if args.apply else None
    if args.json:
        _print_json({"plan": _plan_json(plan), "applied": None if batch is None else asdict(batch)})
        return 0
    changes = plan.changes()
    _say(f"Keep rule {args.rule!r} over {len(plan.clusters)} duplicate clusters: "
          f"{sum(d == 'keep' for d in changes.values())} keep, {sum(d == 'remove' for d in changes.values())} remove"
          + ("" if args.override else " (images already decided left as they are)"))
    for cluster in plan.clusters:
        _say(f"  cluster {cluster.cluster_id}: keep {cluster.keep or '-'}; remove {', '.join(cluster.remove) or '-'}"
              + (f"; unchanged {', '.join(cluster.unchanged)}" if cluster.unchanged else ""))
    if batch is None:
        _say("Nothing written: add --apply to record these decisions.")
    else:
        _say(f"Recorded {batch.images} decision(s); undo with: visual-anomaly undo-decisions {batch.undo_token}")
    return 0


def _plan_json(plan: KeepRulePlan) -> dict:
    return {"rule": plan.rule, "source": plan.source, "override": plan.override,
            "clusters": [asdict(c) for c in plan.clusters], "changes": plan.changes()}


def cmd_undo_decisions(collection: Collection, args: argparse.Namespace) -> int:
    batch = collection.undo_decisions(args.token)
    if args.json:
        _print_json(asdict(batch))
    else:
        _say(f"Restored {batch.images} decision(s); {batch.skipped} decided again since were left as they are "
              f"(redo: visual-anomaly undo-decisions {batch.undo_token})")
    return 0


def cmd_remove(collection: Collection, args: argparse.Namespace) -> int:
    ids = list(args.image_ids) + ([d.image_id for d in collection.duplicates_to_remove()] if args.decided else [])
    count = collection.remove_images(ids)
    _report_count(args, "removed", count, " (restore with `visual-anomaly restore ID`)")
    return 0


def cmd_restore(collection: Collection, args: argparse.Namespace) -> int:
    _report_count(args, "restored", collection.restore_images(args.image_ids), "")
    return 0


def cmd_purge(collection: Collection, args: argparse.Namespace) -> int:
    ids = list(args.image_ids) + (collection.removed_images() if args.removed else [])
    _report_count(args, "purged", collection.purge_images(ids), " for good")
    return 0


def _report_count(args: argparse.Namespace, what: str, count: int, note: str) -> None:
    if args.json:
        _print_json({what: count})
    else:
        _say(f"{count} image(s) {what}{note}")


def cmd_export_reviews(collection: Collection, args: argparse.Namespace) -> int:
    rows = [
        {"image_id": r.image_id, "file_name": r.file_name, "source": r.source} | asdict(r.review)
        | {key: iso_time(getattr(r.review, key)) for key in ("labelled_at", "decided_at", "removed_at")}
        for r in collection.reviews()
    ]
    rows = [{k: "" if v is None else v for k, v in row.items()} for row in rows]
    if args.csv:
        _write_csv(args.csv, rows, REVIEW_COLUMNS)
    if args.json:
        _print_json({"rows": rows})
    else:
        _say(f"{len(rows)} reviewed image(s)" + (f"; wrote them to {args.csv}" if args.csv else ""))
    return 0


def cmd_check(settings: Settings, args: argparse.Namespace) -> int:
    checks = check_servers(settings, args.timeout)
    if args.json:
        _print_json({"ok": all(c.ok for c in checks), "checks": [asdict(c) for c in checks]})
    else:
        _say(*(c.line() for c in checks))
    return 0 if all(c.ok for c in checks) else 2


def cmd_serve_api(settings: Settings, args: argparse.Namespace) -> int:
    """Serve the HTTP API (api/ in this repository) with uvicorn; each worker opens the collection.

    First, once, as the app does: a server deployment without AUTH_SECRET stops here (not in every
    worker), and on first run user ``admin`` is created and its password shown on this terminal,
    so a fresh ``serve-api`` can be signed in to."""
    import uvicorn  # the API's server; only this command needs it

    if args.workers > 1 and not settings.uses_servers:
        raise InvalidRequest("workers", "the embedded default is one process's: use --workers 1, or server backends")
    with Collection.open(settings) as collection:
        collection.auth_secret()
        password = collection.ensure_admin()
        if password is not None:
            _say(*_created_admin(collection, password))
            sys.stdout.flush()
    uvicorn.run("api.serve:app_from_env", factory=True, host=args.host, port=args.port, workers=args.workers,
                log_level="info" if settings.log_format == "json" else "warning")
    return 0


def cmd_repair(collection: Collection, args: argparse.Namespace) -> int:
    report = collection.repair()
    if args.json:
        _print_json(asdict(report))
    else:
        _say(f"Removed {report.removed_pending} half-ingested image(s); computed crop sketches for "
              f"{report.sketches_added} and properties for {report.properties_added} image(s) stored before "
              "they existed.")
    return 0


def _shard(text: str) -> Shard:
    try:
        return Shard.parse(text)
    except InvalidRequest as exc:
        raise argparse.ArgumentTypeError(exc.reason) from None


def _read_password(prompt: str) -> str:
    """A new password: one line from stdin when it is not a terminal (scripts, pipes), else typed
    twice without echo."""
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass(prompt)
    if getpass.getpass("Again: ") != first:
        raise InvalidRequest("password", "the two entries differ")
    return first


def cmd_users(collection: Collection, args: argparse.Namespace) -> int:
    action = args.users_command
    if action == "list":
        users = collection.users()
        if args.json:
            _print_json({"users": [u.to_json() for u in users]})
        else:
            for user in users:
                _say(f"{user.name:24} {user.role.value:8}" + ("  disabled" if user.disabled else ""))
        return 0
    if action == "bootstrap":
        return _bootstrap(collection, args)
    if action == "add":
        user = collection.add_user(args.name, args.role, _read_password(f"Password for {args.name}: "))
        done = {"name": user.name, "role": user.role.value, "added": True}
    elif action == "passwd":
        collection.set_password(args.name, _read_password(f"New password for {args.name}: "))
        done = {"name": args.name, "password_changed": True}
    elif action == "disable":
        collection.disable_user(args.name)
        done = {"name": args.name, "disabled": True}
    else:
        collection.remove_user(args.name)
        done = {"name": args.name, "removed": True}
    if args.json:
        _print_json(done)
    else:
        _say(f"{args.name}: " + ", ".join(k.replace("_", " ") for k, v in done.items() if v is True))
    return 0


def _bootstrap(collection: Collection, args: argparse.Namespace) -> int:
    """First run: the one place the admin's initial password is shown (stdout, never a log)."""
    password = collection.ensure_admin()
    where = str(collection.settings.data_dir / INITIAL_PASSWORD_FILE)
    if args.json:
        _print_json({"created": password is not None, "name": "admin", "password": password,
                     "password_file": where if password else None})
    elif password is None:
        _say("Users exist already; nothing to do (`visual-anomaly users list`).")
    else:
        _say(*_created_admin(collection, password))
    return 0


def _created_admin(collection: Collection, password: str) -> tuple[str, str]:
    where = collection.settings.data_dir / INITIAL_PASSWORD_FILE
    return (f"Created user admin with password: {password}",
            f"It is also in {where} (readable by you only). Sign in and change it: "
            "`visual-anomaly users passwd admin`, then delete that file.")


def _finite(text: str) -> float:
    """A float option: NaN and infinities are refused, naming the option (argparse adds its name)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text} is not a finite number")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive whole number")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="visual-anomaly", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    ingest = commands.add_parser("ingest", help="ingest image files and folders (recursively)")
    ingest.add_argument("paths", nargs="+", help="files or folders")
    ingest.add_argument("--source", help="a label for this batch, e.g. batch-2026-11 (default: 'default')")
    ingest.add_argument("--shard", type=_shard, metavar="I/N",
                        help="ingest only worker I's share of the files when N workers split them (by a hash of "
                        "each file's absolute path; e.g. 0/4 ... 3/4)")
    ingest.set_defaults(run=cmd_ingest)

    status = commands.add_parser("status", help="counts per store, backends and model in use")
    status.set_defaults(run=cmd_status)

    repair = commands.add_parser("repair", help="remove what interrupted ingests left behind; backfill crop sketches and properties")
    repair.set_defaults(run=cmd_repair)

    search = commands.add_parser("search", help="images nearest to a text, an image file or a stored image")
    query = search.add_mutually_exclusive_group(required=True)
    query.add_argument("--text", help="what the images should show")
    query.add_argument("--image", help="an image file to search by (not stored)")
    query.add_argument("--similar-to", metavar="IMAGE_ID", help="an image already in the collection")
    search.add_argument("--k", type=_positive, default=20, help="how many results (default 20)")
    search.add_argument("--min-score", type=_finite, help="drop results under this cosine similarity")
    search.add_argument("--source", action="append", help="only these source labels (repeatable)")
    search.add_argument("--uploader", action="append", help="only these uploaders (repeatable)")
    search.add_argument("--format", action="append", help="only these formats, e.g. JPEG (repeatable)")
    search.set_defaults(run=cmd_search)

    duplicates = commands.add_parser("duplicates", help="exact and near duplicates as clusters")
    duplicates.add_argument("--similarity", type=_finite, help="calibrated similarity threshold (default 0.95; 1 = identical)")
    duplicates.add_argument("--cosine", type=_finite, help="raw cosine threshold, translated to the calibrated scale")
    duplicates.add_argument("--hamming", type=int, default=DuplicateThresholds().hamming, help="pHash bits (default %(default)s)")
    duplicates.add_argument("--crop", type=_finite, default=DuplicateThresholds().crop,
                            help="correlation a verified crop needs (default %(default)s; above 1 turns crops off)")
    duplicates.add_argument("--rule", choices=("either", "both"), default="either", help="how the signals combine")
    duplicates.add_argument("--csv", help="write one row per image in a cluster to this file")
    duplicates.set_defaults(run=cmd_duplicates)

    anomalies = commands.add_parser("anomalies", help="every image ranked by how unusual it is")
    anomalies.add_argument("--method", choices=METHODS, default=DEFAULT_ANOMALY_METHOD,
                           help="scoring method (default %(default)s: embedding and image properties combined)")
    anomalies.add_argument("--k", type=_positive, help="neighbours for knn/lof/combined (default: the graph's k)")
    pick = anomalies.add_mutually_exclusive_group()
    pick.add_argument("--top", type=_positive, help="select the N most unusual")
    pick.add_argument("--threshold", type=_finite, help="select scores at or above this")
    pick.add_argument("--contamination", type=_finite, help="select the most unusual PERCENT of the collection")
    anomalies.add_argument("--csv", help="write one row per image to this file (with its reasons and flags)")
    anomalies.add_argument("--z", type=_finite, default=DEFAULT_Z,
                           help="robust z-score from which a quality flag is raised (default %(default)s)")
    anomalies.set_defaults(run=cmd_anomalies)

    issues = commands.add_parser("issues", help="images with quality issues (blank, dark, blurry, tiny, odd aspect, "
                                 "...), judged against the collection")
    issues.add_argument("--flag", choices=FLAG_NAMES, help="only this issue")
    issues.add_argument("--z", type=_finite, default=DEFAULT_Z,
                        help="robust z-score from which a flag is raised (default %(default)s)")
    issues.add_argument("--csv", help="write one row per flag raised to this file")
    issues.set_defaults(run=cmd_issues)

    label = commands.add_parser("label", help="record an analyst's review of an image")
    label.add_argument("image_id")
    label.add_argument("label", choices=("anomaly", "normal", "clear"))
    label.set_defaults(run=cmd_label)

    serve = commands.add_parser("serve-api", help="serve the HTTP API (OpenAPI at /docs)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=_positive, default=8000, help="port (default 8000)")
    serve.add_argument("--workers", type=_positive, default=1, help="worker processes (server backends only)")
    serve.set_defaults(run=cmd_serve_api, needs_collection=False)

    decide = commands.add_parser("decide", help="mark images keep or remove among their duplicates (or clear)")
    decide.add_argument("image_ids", nargs="+", metavar="IMAGE_ID")
    decide.add_argument("decision", choices=("keep", "remove", "clear"))
    decide.set_defaults(run=cmd_decide)

    keep_rule = commands.add_parser("keep-rule", help="preview (or --apply) a keep rule over every duplicate cluster")
    keep_rule.add_argument("rule", choices=tuple(KEEP_RULES), help="which copy each cluster keeps")
    keep_rule.add_argument("--source", help="the preferred source label (rule 'source')")
    keep_rule.add_argument("--override", action="store_true", help="re-decide images already decided")
    keep_rule.add_argument("--apply", action="store_true", help="record the decisions (default: preview only)")
    keep_rule.add_argument("--similarity", type=_finite, help="calibrated similarity threshold (default 0.95)")
    keep_rule.add_argument("--hamming", type=int, default=DuplicateThresholds().hamming, help="pHash bits")
    keep_rule.add_argument("--crop", type=_finite, default=DuplicateThresholds().crop, help="crop correlation")
    keep_rule.add_argument("--rule-combine", dest="rule_combine", choices=("either", "both"), default="either",
                           help="how the duplicate signals combine")
    keep_rule.set_defaults(run=cmd_keep_rule)

    undo = commands.add_parser("undo-decisions", help="undo a decide or keep-rule --apply by its token")
    undo.add_argument("token")
    undo.set_defaults(run=cmd_undo_decisions)

    remove = commands.add_parser("remove", help="soft-delete images (admins; restorable)")
    remove.add_argument("image_ids", nargs="*", metavar="IMAGE_ID")
    remove.add_argument("--decided", action="store_true", help="every visible image marked remove")
    remove.set_defaults(run=cmd_remove)

    restore = commands.add_parser("restore", help="bring soft-deleted images back")
    restore.add_argument("image_ids", nargs="+", metavar="IMAGE_ID")
    restore.set_defaults(run=cmd_restore)

    purge = commands.add_parser("purge", help="delete images for good: blob, vector and catalog row (admins)")
    purge.add_argument("image_ids", nargs="*", metavar="IMAGE_ID")
    purge.add_argument("--removed", action="store_true", help="every soft-deleted image")
    purge.set_defaults(run=cmd_purge)

    export = commands.add_parser("export-reviews", help="labels, decisions and soft deletes with who and when")
    export.add_argument("--csv", help="write one row per reviewed image to this file")
    export.set_defaults(run=cmd_export_reviews)

    check = commands.add_parser("check", help="check that every configured server answers (exit 2 if not)")
    check.add_argument("--timeout", type=_finite, default=3.0, help="seconds per server (default 3)")
    check.set_defaults(run=cmd_check, needs_collection=False)

    users = commands.add_parser("users", help="manage who may sign in to the app and the API, and their roles")
    users.set_defaults(run=cmd_users)
    user_commands = users.add_subparsers(dest="users_command", required=True)
    roles = [r.value for r in Role]
    subs = [ingest, status, repair, search, duplicates, anomalies, issues, label, check, decide, keep_rule, undo, remove,
            restore, purge, export]
    for name, text in (
        ("add", "add a user (password from stdin when piped, else typed twice)"),
        ("list", "every user, role and whether disabled"),
        ("passwd", "set a user's password (from stdin when piped, else typed twice)"),
        ("disable", "refuse a user's sign-ins and requests from now on"),
        ("remove", "delete a user"),
        ("bootstrap", "first run: create user admin with a random password, shown once"),
    ):
        sub = user_commands.add_parser(name, help=text)
        if name not in ("list", "bootstrap"):
            sub.add_argument("name", help="user name (lower case)")
        if name == "add":
            sub.add_argument("--role", required=True, choices=roles, help="viewer, analyst or admin")
        subs.append(sub)

    for sub in subs:
        sub.add_argument("--json", action="store_true", help="print one JSON object on stdout")
        if sub is not check:
            sub.add_argument("--as-user", metavar="NAME", help="act as this catalog user (default: the local admin)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        # Text users read the summary; log collectors (LOG_FORMAT=json) get every event on stderr.
        configure_logging(settings.log_format, level=logging.INFO if settings.log_format == "json" else logging.WARNING)
        if not getattr(args, "needs_collection", True):
            return int(args.run(settings, args))
        with Collection.open(settings) as collection:
            acting = collection.as_user(args.as_user) if args.as_user else collection
            return int(args.run(acting, args))
    except USER_ERRORS as exc:
        print(printable(f"visual-anomaly: {exc}"), file=sys.stderr)
        return exc.exit_code if isinstance(exc, DomainError) else 2


if __name__ == "__main__":
    sys.exit(main())
