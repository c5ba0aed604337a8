"""``clinseg models list | show | install | import | verify | export | remove``."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

from ..errors import ClinsegError
from ..registry import ModelCard, Registry, get_registry
from .reporting import Reporter, add_common_arguments


def _summary(registry: Registry, card: ModelCard) -> dict:
    return {
        "id": card.id,
        "task": card.task,
        "version": card.version,
        "installed": registry.is_installed(card.id),
        "parameter_count": card.parameter_count,
        "synthetic": card.synthetic,
        "licence": card.licence,
        "description": card.data["description"],
    }


def _list(args: argparse.Namespace) -> int:
    registry = get_registry()
    rows = [_summary(registry, card) for card in registry.list()]
    if args.json:
        print(json.dumps(rows))
        return 0
    header = ("ID", "TASK", "VERSION", "INSTALLED", "PARAMS", "TRAINED ON", "LICENCE")
    table = [header] + [
        (r["id"], r["task"], r["version"], "yes" if r["installed"] else "no", f"{r['parameter_count']:,}",
         "synthetic" if r["synthetic"] else "real data", r["licence"])
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    return 0


def _show(args: argparse.Namespace) -> int:
    registry = get_registry()
    card = registry.card(args.id)
    folder = registry.model_dir(args.id)
    if args.json:
        print(json.dumps({"card": card.to_dict(), "installed_dir": str(folder) if folder else None}))
        return 0
    data = card.data
    name, kwargs = card.architecture
    inputs = data["inputs"]
    training = data["training_data"]
    lines = [
        ("id", f"{card.id} {card.version} ({card.task})"),
        ("description", data["description"]),
        ("licence", card.licence),
        ("citation", data["citation"]),
        ("training data", f"{training['description']} [{'synthetic' if card.synthetic else 'real'}]"),
        ("network", f"{name}({', '.join(f'{k}={v}' for k, v in kwargs.items())}), {card.parameter_count:,} parameters"),
        ("inputs", f"{'/'.join(inputs['modalities'])}, {inputs['channels']} channel(s), spacing {inputs['spacing']}, "
                   f"patch {inputs['patch_size']}, overlap {inputs['overlap']}, intensity {inputs['intensity']}"),
    ]
    if card.inference:
        lines.append(("inference", json.dumps(card.inference)))
    if card.postprocessing:
        lines.append(("postprocessing", json.dumps(card.postprocessing)))
    for segment in card.segments():
        lines.append(("label", f"{segment.label} {segment.name} ({' / '.join(segment.type)})"))
    for entry in card.files:
        origin = f" <- {entry.url}" if entry.url else ""
        if entry.converted_from_sha256:
            origin = f" (converted from SHA-256 {entry.converted_from_sha256})"
        lines.append(("file", f"{entry.name} {entry.format} {entry.size:,} bytes sha256 {entry.sha256}{origin}"))
    lines.append(("figures", json.dumps(card.figures) if card.figures else "none measured yet"))
    lines.append(("installed", str(folder) if folder else "no"))
    width = max(len(key) for key, _ in lines)
    for key, value in lines:
        print(f"{key:<{width}}  {value}")
    return 0


def _add_model(args: argparse.Namespace, add: Callable[[Registry, Reporter], ModelCard]) -> int:
    """Install or import one model with ``add``, then report where it went and its files.

    A failure reaches ``main``, which prints it on stderr; in jsonl mode it is also an error event on
    stdout, the only stream programs read.
    """
    reporter = Reporter.from_args(args)
    registry = get_registry()
    try:
        card = add(registry, reporter)
    except ClinsegError as error:
        if reporter.mode == "jsonl":
            reporter.error(str(error))
        raise
    reporter.result({
        "model": card.id,
        "installed_dir": str(registry.model_dir(card.id)),
        "files": [entry.as_dict() for entry in card.files],
    })
    return 0


def _install(args: argparse.Namespace) -> int:
    def install(registry: Registry, reporter: Reporter) -> ModelCard:
        return registry.install(args.id, url=args.url, progress=reporter.progress)

    return _add_model(args, install)


def _import(args: argparse.Namespace) -> int:
    return _add_model(args, lambda registry, _reporter: registry.import_file(args.path, model_id=args.id))


def _verify(args: argparse.Namespace) -> int:
    reporter = Reporter.from_args(args)
    registry = get_registry()
    ids = [args.id] if args.id else [card.id for card in registry.list() if registry.is_installed(card.id)]
    if not ids:
        reporter.log("no models installed")
        return 0
    failed = 0
    for model_id in ids:
        problems = registry.verify(model_id)
        failed += bool(problems)
        reporter.result({"model": model_id, "ok": not problems, "problems": problems})
    return 1 if failed else 0


def _export(args: argparse.Namespace) -> int:
    reporter = Reporter.from_args(args)
    path = get_registry().export_pack(args.id, args.out)
    reporter.result({"model": args.id, "pack": str(path)})
    return 0


def _remove(args: argparse.Namespace) -> int:
    registry = get_registry()
    registry.card(args.id)  # unknown ids raise
    removed = registry.remove(args.id)
    Reporter.from_args(args).result({"model": args.id, "removed": removed})
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("models", help="list, install, import and verify segmentation models")
    sub = p.add_subparsers(dest="models_command", required=True)

    q = sub.add_parser("list", help="known models and whether they are installed")
    q.add_argument("--json", action="store_true", help="print a JSON array")
    q.set_defaults(func=_list)

    q = sub.add_parser("show", help="a model's card")
    q.add_argument("id")
    q.add_argument("--json", action="store_true", help="print the card as JSON")
    q.set_defaults(func=_show)

    q = sub.add_parser("install", help="download a model's weights (SHA-256 checked)")
    q.add_argument("id")
    q.add_argument("--url", default=None, help="download from here instead (https:// or file://)")
    add_common_arguments(q)
    q.set_defaults(func=_install)

    q = sub.add_parser("import", help="install a weight file or model pack (.zip) from disk, identified by hash")
    q.add_argument("path")
    q.add_argument("--id", default=None, help="the model the file belongs to (default: found by its SHA-256)")
    add_common_arguments(q)
    q.set_defaults(func=_import)

    q = sub.add_parser("verify", help="check installed files against their cards (exit 1 on problems)")
    q.add_argument("id", nargs="?", default=None, help="one model (default: every installed model)")
    add_common_arguments(q)
    q.set_defaults(func=_verify)

    q = sub.add_parser("export", help="write an installed model as a model pack (.zip) for offline machines")
    q.add_argument("id")
    q.add_argument("out", help="output .zip")
    add_common_arguments(q)
    q.set_defaults(func=_export)

    q = sub.add_parser("remove", help="delete an installed model")
    q.add_argument("id")
    add_common_arguments(q)
    q.set_defaults(func=_remove)
