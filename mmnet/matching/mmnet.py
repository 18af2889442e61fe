"""`Matcher`: MMNet keypoint transfer and dense flow between two images of any size, in their own pixels.

Keypoint transfer computes only the correlation rows of the query points (memory grows with the image area,
not its square); dense flow walks over the source cells in chunks. Conventions: docs/conventions.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import torch

from ..checks import check_bool, check_choice, check_int, check_keys, check_size, describe
from ..errors import InputError
from ..models.mmnet import MMNet, MMNetConfig
from ..zoo._factory import from_pretrained
from . import coarse_to_fine
from .base import CheckpointMatcher, FlowResult, MatchResult, cells_to_flow
from .geometry import Convention, bilinear_cells, blend_rows, grid_to_pixels, pixel_grid, pixels_to_grid
from .images import PreprocessConfig, prepare
from .readouts import OFFICIAL_INPUT_SIZE, PRESETS, ReadoutConfig, check_preset, read_scores
from .transport import gather_rows, transport_table

#: The smallest input side: one cell at the coarsest (stride 32) level.
MIN_INPUT_SIDE = 32
#: Floats of correlation rows per keypoint step when `chunk_size` is not given (64 MiB).
ROW_BUDGET = 1 << 24
#: Source cells per step of dense flow when `chunk_size` is not given.
FLOW_CHUNK = 2048


def create_mmnet(name: str, pretrained: bool = False, pretrained_backbone: bool = False, **config: Any) -> MMNet:
    """The registry's MMNet factory: ``mmnet_<backbone>[.tag]`` -> `MMNet` (see `mmnet.create_model`)."""
    arch, _, tag = name.partition(".")
    check_keys(
        f"keyword argument(s) of create_model({name!r})",
        config,
        [f.name for f in fields(MMNetConfig) if f.name != "backbone"],
    )
    check_bool("pretrained", pretrained)
    check_bool("pretrained_backbone", pretrained_backbone)
    if pretrained or tag:
        if config:
            raise InputError("config overrides cannot be combined with pretrained weights")
        return from_pretrained(name)
    return MMNet(MMNetConfig(backbone=arch.removeprefix("mmnet_"), **config), pretrained_backbone=pretrained_backbone)


class Matcher(CheckpointMatcher):
    """Semantic correspondence between image pairs with an MMNet.

    Args:
        model: an `MMNet` (e.g. from `mmnet.create_model` or `mmnet.from_pretrained`).
        device: ``"cpu"``, ``"cuda"``, ... (default: CUDA when available).
        preset: None (default): the checkpoint's own readout (its config.json); ``"finest"``: the finest level,
            soft-argmax, cell centres; ``"official"``: the official test's readout and input (level 2, argmax,
            cell corners, 224 x 320 without antialias). ``"default"`` is a deprecated name of ``"finest"``.
            Keyword `readout` fields (``level``, ``method``, ``window``, ``convention``, ``ot_*``) override it.
        input_size: (H, W) the images are resized to (default: the checkpoint's).
        amp: autocast on CUDA (bfloat16 where supported, else float16); default on for CUDA, except with the
            official readout, which runs in float32 like the official test.
        chunk_size: source cells per step in dense flow (default 2048), and keypoints per step in `match`
            (default: as many as keep each step's rows of the read level within 64 MiB: 936 at 224 x 320, level 3).
        micro_batch: pairs per network forward in `match_batch` / `flow_batch` (default: 1 on the CPU, where
            larger batches made each image slower (see docs/benchmarks.md), all pairs at once on a GPU).
        pair_batch: run each pair's source and target through the network as one batch (default). False runs
            them one after the other: the same outputs with half the activation memory, 4-11% slower on a CPU
            (docs/benchmarks.md).
        flow_search: ``"exact"`` (default): dense flow scores every target cell; ``"coarse-to-fine"``: the
            coarsest level is searched whole and each finer level only within `search_radius` cells (default 6)
            of the up-sampled coarser best match (2x faster at 960 x 1280, the same PCK on PF-WILLOW; needs an
            argmax or soft-argmax readout; docs/benchmarks.md).
        fold_batchnorm: fold the backbone's BatchNorm into its convolutions (in place: the model becomes
            inference-only; same outputs up to float rounding). `Matcher.create` / `from_pretrained` do it for
            the model they load; off for a model you pass, which you may still want to train.
    """

    _new_model = staticmethod(create_mmnet)
    _load_model = staticmethod(from_pretrained)

    def __init__(
        self,
        model: MMNet,
        *,
        device: str | torch.device | None = None,
        preset: str | None = None,
        input_size: tuple[int, int] | None = None,
        amp: bool | None = None,
        chunk_size: int | None = None,
        micro_batch: int | None = None,
        pair_batch: bool = True,
        flow_search: str = "exact",
        search_radius: int = 6,
        fold_batchnorm: bool = False,
        **readout: Any,
    ) -> None:
        if not isinstance(model, MMNet):
            raise InputError(
                f"model must be an MMNet (mmnet.create_model or mmnet.from_pretrained), got {describe(model)}"
            )
        preset = check_preset(preset, PRESETS)
        check_keys("keyword argument(s) of Matcher", readout, [f.name for f in fields(ReadoutConfig)])
        if amp is not None:
            check_bool("amp", amp)
        self.chunk_size = None if chunk_size is None else check_int("chunk_size", chunk_size, min=1)
        self.micro_batch = None if micro_batch is None else check_int("micro_batch", micro_batch, min=1)
        self.pair_batch = check_bool("pair_batch", pair_batch)
        self.flow_search = check_choice("flow_search", flow_search, ("exact", "coarse-to-fine"))
        self.search_radius = check_int("search_radius", search_radius, min=0)
        check_bool("fold_batchnorm", fold_batchnorm)
        if input_size is not None:
            input_size = check_size("input_size", input_size, min=MIN_INPUT_SIDE)
        super().__init__(device)
        base = PRESETS[preset] if preset else ReadoutConfig(**model.readout)
        self.readout = replace(base, **readout)
        self.model = model.eval().to(self.device)
        if fold_batchnorm and not getattr(model, "folded", False):
            model.fold_batchnorm()
        self.name = model.architecture
        preprocess = model.preprocess
        if preset == "official":
            preprocess = replace(preprocess, size=OFFICIAL_INPUT_SIZE, antialias=False)
        self.preprocess: PreprocessConfig = replace(preprocess, size=input_size) if input_size else preprocess
        # the official readout is a hard argmax over raw scores: keep it in float32 (as the official test) by default
        self.amp = (self.device.type == "cuda" and self.readout != PRESETS["official"]) if amp is None else amp
        if not -model.num_levels <= self.readout.level < model.num_levels:
            raise InputError(
                f"level {self.readout.level} out of range: level must be an integer in "
                f"[{-model.num_levels}, {model.num_levels - 1}] for this model's {model.num_levels} "
                "levels (coarse to fine)"
            )
        if self.flow_search == "coarse-to-fine" and self.readout.method == "ot":
            raise InputError("flow_search='coarse-to-fine' needs a per-row readout (argmax or softargmax), not 'ot'")

    @classmethod
    def create(cls, name_or_path: str | Path, **kwargs: Any) -> Matcher:
        """`CheckpointMatcher.create` (``pretrained``, ``revision``, ``cache_dir``, ``local_files_only``; kwargs
        go to `Matcher`), with ``fold_batchnorm=True`` by default: the model is ours, fold it for inference."""
        kwargs.setdefault("fold_batchnorm", True)
        return super().create(name_or_path, **kwargs)

    @property
    def convention(self) -> Convention:
        return self.readout.convention

    @property
    def _level(self) -> int:
        return self.readout.level % self.model.num_levels

    def _inputs(self, images: list[torch.Tensor]) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        sizes = [(int(t.shape[1]), int(t.shape[2])) for t in images]
        batch = torch.cat([prepare(t[None].to(self.device), self.preprocess) for t in images])
        return batch, sizes

    def _to_target_pixels(
        self, grid_xy: torch.Tensor, grid_size: Sequence[int], sizes: Sequence[tuple[int, int]]
    ) -> torch.Tensor:
        """(B, M, 2) target grid xy -> target original pixels."""
        conv = self.readout.convention
        pixels = grid_to_pixels(grid_xy, self.preprocess.size, grid_size, conv)
        return torch.stack(
            [grid_to_pixels(p, size, self.preprocess.size, conv) for p, size in zip(pixels, sizes, strict=True)]
        )

    def _transport(self, src_feats: list[torch.Tensor], tgt_feats: list[torch.Tensor]) -> torch.Tensor | None:
        """The ``"ot"`` readout's rows of every source cell (B, M, ht, wt), or None for the other readouts."""
        if self.readout.method != "ot":
            return None
        return transport_table(
            self.model, src_feats, tgt_feats, self._level, self.readout, self.preprocess.size, self._flow_chunk
        )

    @property
    def _flow_chunk(self) -> int:
        return self.chunk_size or FLOW_CHUNK

    def _steps(self, count: int) -> list[slice]:
        """The pairs of each network forward: `micro_batch` at a time (default 1 on the CPU, all on a GPU)."""
        size = self.micro_batch or (count if self.device.type != "cpu" else 1)
        return [slice(i, i + size) for i in range(0, count, size)]

    def _match(
        self, sources: list[torch.Tensor], targets: list[torch.Tensor], points: list[torch.Tensor]
    ) -> list[MatchResult]:
        return [r for s in self._steps(len(sources)) for r in self._match_step(sources[s], targets[s], points[s])]

    def _flow(self, sources: list[torch.Tensor], targets: list[torch.Tensor]) -> list[FlowResult]:
        return [r for s in self._steps(len(sources)) for r in self._flow_step(sources[s], targets[s])]

    def _match_step(
        self, sources: list[torch.Tensor], targets: list[torch.Tensor], points: list[torch.Tensor]
    ) -> list[MatchResult]:
        src, src_sizes = self._inputs(sources)
        tgt, tgt_sizes = self._inputs(targets)
        n = max(max(len(p) for p in points), 1)
        conv, size = self.readout.convention, self.preprocess.size
        padded = torch.zeros(len(points), n, 2, device=self.device)
        for i, (p, hw) in enumerate(zip(points, src_sizes, strict=True)):
            padded[i, : len(p)] = pixels_to_grid(p.to(self.device), hw, size, conv)
        with self.autocast():
            src_feats, tgt_feats = self.model.pair_features(src, tgt, self._level, batched=self.pair_batch)
            src_grid, tgt_grid = src_feats[self._level].shape[-2:], tgt_feats[self._level].shape[-2:]
            table = self._transport(src_feats, tgt_feats)
            # `chunk_size` points per step: the correlation rows of all points at once would need
            # 4 x N x (target cells) floats (18 GB for a million points). The answers go into tensors allocated
            # before the loop, so that no small tensor outlives a step between its large temporaries (with
            # glibc, such survivors kept the heap from being reused: memory grew with the number of steps).
            grid_xy = torch.empty(len(points), n, 2, device=self.device)
            scores = torch.empty(len(points), n, device=self.device)
            grid_points = pixels_to_grid(padded, size, src_grid, conv)
            per_step = self.chunk_size or max(1, ROW_BUDGET // (4 * tgt_grid[0] * tgt_grid[1]))  # 4: bilinear
            for start in range(0, n, per_step):
                step = slice(start, start + per_step)
                cells, weights = bilinear_cells(grid_points[:, step], src_grid)
                rows = (
                    self.model.correlation_rows(src_feats, tgt_feats, cells.flatten(1), self._level)[-1]
                    if table is None
                    else gather_rows(table, cells.flatten(1))
                )
                grid_xy[:, step], scores[:, step] = read_scores(blend_rows(rows, weights), self.readout)
        target = self._to_target_pixels(grid_xy, tgt_grid, tgt_sizes)
        return [MatchResult(target[i, : len(p)].cpu(), scores[i, : len(p)].cpu()) for i, p in enumerate(points)]

    def _flow_step(self, sources: list[torch.Tensor], targets: list[torch.Tensor]) -> list[FlowResult]:
        src, src_sizes = self._inputs(sources)
        tgt, tgt_sizes = self._inputs(targets)
        with self.autocast():
            src_feats, tgt_feats = self.model.pair_features(src, tgt, self._level, batched=self.pair_batch)
            (h, w), tgt_grid = src_feats[self._level].shape[-2:], tgt_feats[self._level].shape[-2:]
            all_cells = torch.arange(h * w, device=self.device).expand(len(src), -1)
            if self.flow_search == "coarse-to-fine":
                windows, origin = coarse_to_fine.search(
                    src_feats, tgt_feats, self._level, self.search_radius, self._flow_chunk
                )
                xy, conf = read_scores(windows, self.readout)
                read = [(xy + origin.flip(-1).to(xy.dtype), conf)]
            else:
                table = self._transport(src_feats, tgt_feats)
                read = [
                    read_scores(
                        self.model.correlation_rows(src_feats, tgt_feats, chunk, self._level)[-1]
                        if table is None
                        else gather_rows(table, chunk),
                        self.readout,
                    )
                    for chunk in all_cells.split(self._flow_chunk, dim=1)
                ]
        target = self._to_target_pixels(torch.cat([r[0] for r in read], 1), tgt_grid, tgt_sizes)
        cell_maps = torch.cat([target.transpose(1, 2), torch.cat([r[1] for r in read], 1)[:, None]], 1)
        cell_maps = cell_maps.view(len(src), 3, h, w)
        conv, size = self.readout.convention, self.preprocess.size
        return [
            cells_to_flow(
                cell_maps[i],
                pixels_to_grid(pixels_to_grid(pixel_grid(hw, self.device), hw, size, conv), size, (h, w), conv),
            )
            for i, hw in enumerate(src_sizes)
        ]
