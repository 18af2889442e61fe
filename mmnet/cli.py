"""The `mmnet` command: match, flow, models, download (+ eval, convert-official, train from their modules).

Every subcommand is an argparse subparser whose ``func(args) -> int`` runs it; other modules add theirs
through an ``add_parser(subparsers)`` function listed in `_EXTENSIONS`.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import MMNetError

if TYPE_CHECKING:
    from .matcher import Matcher

DEFAULT_MODEL = "mmnet_efficientnet_lite2.cub_photos"
_EXTENSIONS = ("mmnet.eval.command", "mmnet.convert", "mmnet.train.cli")


def parse_keypoints(text: str) -> list[tuple[float, float]]:
    """``"x,y;x,y"`` or a path to a JSON list of [x, y] -> list of (x, y)."""
    path = Path(text)
    if path.suffix == ".json" and path.is_file():
        return [(float(x), float(y)) for x, y in json.loads(path.read_text())]
    try:
        return [(float(x), float(y)) for x, y in (p.split(",") for p in text.split(";") if p.strip())]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"keypoints must look like 'x,y;x,y' (got {text!r})") from exc


def _matcher(args: argparse.Namespace) -> Matcher:
    from .matcher import Matcher

    return Matcher.from_pretrained(args.model, device=args.device, preset=args.preset,
                                   local_files_only=args.offline)


def _cmd_match(args: argparse.Namespace) -> int:
    matcher = _matcher(args)
    result = matcher.match(args.source, args.target, args.kpts)
    rows = [{"source": list(s), "target": [round(float(v), 2) for v in t], "score": round(float(c), 4)}
            for s, t, c in zip(args.kpts, result.keypoints.tolist(), result.scores.tolist(), strict=True)]
    for row in rows:
        print(f"({row['source'][0]:7.1f}, {row['source'][1]:7.1f}) -> "
              f"({row['target'][0]:7.1f}, {row['target'][1]:7.1f})  score {row['score']:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": args.model, "matches": rows}, indent=2) + "\n")
    if args.out:
        from .viz import plot_matches, save

        save(plot_matches(args.source, args.target, args.kpts, result.keypoints, result.scores), args.out)
        print(f"wrote {args.out}")
    return 0


def _cmd_flow(args: argparse.Namespace) -> int:
    import numpy as np

    matcher = _matcher(args)
    result = matcher.flow(args.source, args.target)
    print(f"flow {tuple(result.flow.shape)} (dx, dy per source pixel), mean score {result.scores.mean():.3f}")
    if args.npy:
        np.save(args.npy, result.flow.numpy())
        print(f"wrote {args.npy}")
    if args.out:
        from .viz import plot_warp, save

        save(plot_warp(args.source, args.target, matcher.warp(args.source, args.target)), args.out)
        print(f"wrote {args.out}")
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from .hub import released_dir
    from .registry import get_pretrained_cfg, list_models

    print("architectures:")
    for name in list_models(args.filter):
        print(f"  {name}")
    print("pretrained weights:")
    for name in list_models(args.filter, pretrained=True):
        cfg = get_pretrained_cfg(name)
        if cfg.local_dir:
            folder = released_dir(cfg.local_dir)
            where = str(folder) if folder.exists() else f"{folder} (not there yet)"
        else:
            where = f"hub {cfg.hub_id}"
        print(f"  {name}  [{where}; licence {cfg.license}]")
        if cfg.notes and not (cfg.local_dir and released_dir(cfg.local_dir).exists()):
            print(f"      {cfg.notes}")
    return 0


def _cmd_download(args: argparse.Namespace) -> int:
    from .hub import resolve_files

    config, _, _ = resolve_files(args.name, revision=args.revision, cache_dir=args.cache_dir)
    print(f"{args.name}: {config.parent}")
    return 0


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"name, hub id or folder (default {DEFAULT_MODEL})")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    parser.add_argument("--preset", choices=["default", "official"], default=None, help="readout preset")
    parser.add_argument("--offline", action="store_true", help="never touch the network (hub cache only)")


def build_parser() -> argparse.ArgumentParser:
    from .version import __version__

    parser = argparse.ArgumentParser(prog="mmnet", description="Semantic correspondence with MMNet.")
    parser.add_argument("--version", action="version", version=f"mmnet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    match = sub.add_parser("match", help="transfer keypoints from a source image to a target image")
    match.add_argument("source")
    match.add_argument("target")
    match.add_argument("--kpts", required=True, type=parse_keypoints, help="'x,y;x,y' or a JSON file of [x, y]")
    match.add_argument("--out", help="write a side-by-side picture of the matches (PNG)")
    match.add_argument("--json", help="write the matches as JSON")
    _add_model_args(match)
    match.set_defaults(func=_cmd_match)

    flow = sub.add_parser("flow", help="dense flow from every source pixel to the target")
    flow.add_argument("source")
    flow.add_argument("target")
    flow.add_argument("--npy", help="write the (2, H, W) flow as .npy")
    flow.add_argument("--out", help="write the source warped onto the target (PNG)")
    _add_model_args(flow)
    flow.set_defaults(func=_cmd_flow)

    models = sub.add_parser("models", help="list architectures and pretrained weights")
    models.add_argument("filter", nargs="?", default="*", help="glob pattern, e.g. '*lite*'")
    models.set_defaults(func=_cmd_models)

    download = sub.add_parser("download", help="fetch weights into the hub cache for offline use")
    download.add_argument("name")
    download.add_argument("--revision")
    download.add_argument("--cache-dir")
    download.set_defaults(func=_cmd_download)

    for module in _EXTENSIONS:
        importlib.import_module(module).add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except MMNetError as exc:
        print(f"mmnet: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
