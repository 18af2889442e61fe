"""What the trainer needs of each trainable model family: its objective, its checkpoint IO and its matcher.

`family_of(model)` picks the entry by the model's architecture (``mmnet_*``, ``cats_*``, ``lpmflow_*``); the
`Trainer` builds ``family.objective(model, config)`` (an `nn.Module` whose ``forward(src, tgt, src_kps,
tgt_kps, valid)`` returns the scalar loss of a batch), saves its best and released weights with ``family.save``
and validates with ``family.matcher``. Everything else (data, parameter groups, schedules, AMP, DDP, exact
resume) is shared. The objectives:

- MMNet: `mmnet.train.loss.mmnet_loss` (multi-scale keypoint BCE; `TrainConfig.convention`, `loss_levels`).
- CATs: `mmnet.train.cats.cats_loss`: ``objective="default"``/``"flow"`` (flow EPE, the official objective) or
  ``"keypoint"`` (MMNet-style loss on the CATs scores); `flow_target` ``"keypoints"`` or ``"official"``.
- LPMFlow: `mmnet.train.lpmflow.lpmflow_loss`: flow EPE (`flow_target`) + ``rptc_lambda(epoch) * L_RPTC`` with
  the `rptc_schedule` ``"code"`` or ``"supplement"``; the epoch is the trainer's (one pass over the data).

Add a family: one `TrainFamily` in `FAMILIES` with an `Objective` subclass taking ``(model, config)`` and
implementing `Objective.loss`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from mmnet.checks import check_keys, describe
from mmnet.errors import InputError

if TYPE_CHECKING:
    from mmnet.train.trainer import TrainConfig

#: One batch as `Objective.forward` takes it: src, tgt, src_kps, tgt_kps, valid.
Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def _resolve(path: str) -> Any:
    module, _, name = path.partition(":")
    value: Any = importlib.import_module(module)
    for part in name.split("."):
        value = getattr(value, part)
    return value


class Objective(nn.Module):
    """The model plus its training loss, so DistributedDataParallel sees (and syncs) the whole step.

    `epoch` is set by the trainer before every optimiser step (for losses with a schedule)."""

    def __init__(self, model: nn.Module, config: TrainConfig) -> None:
        super().__init__()
        self.model: Any = model  # the family's network (MMNet, CATs or LPMFlow)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def forward(
        self, src: torch.Tensor, tgt: torch.Tensor, src_kps: torch.Tensor, tgt_kps: torch.Tensor, valid: torch.Tensor
    ) -> torch.Tensor:
        return self.loss((src, tgt, src_kps, tgt_kps, valid))

    def loss(self, batch: Batch) -> torch.Tensor:
        """The family's scalar loss of a batch ``(src, tgt, src_kps, tgt_kps, valid)`` (`forward`'s arguments)."""
        raise NotImplementedError


class MMNetObjective(Objective):
    def __init__(self, model: nn.Module, config: TrainConfig) -> None:
        super().__init__(model, config)
        self.convention, self.levels = config.convention, config.loss_levels

    def loss(self, batch: Batch) -> torch.Tensor:
        from mmnet.train.loss import mmnet_loss

        return mmnet_loss(self.model, *batch, self.convention, self.levels)


class CatsObjective(Objective):
    def __init__(self, model: nn.Module, config: TrainConfig) -> None:
        super().__init__(model, config)
        self.objective = "flow" if config.objective == "default" else config.objective
        self.target = config.flow_target

    def loss(self, batch: Batch) -> torch.Tensor:
        from mmnet.train.cats import cats_loss

        return cats_loss(self.model, *batch, objective=self.objective, target=self.target)[0]


class LpmflowObjective(Objective):
    def __init__(self, model: nn.Module, config: TrainConfig) -> None:
        super().__init__(model, config)
        self.target, self.schedule = config.flow_target, config.rptc_schedule

    def loss(self, batch: Batch) -> torch.Tensor:
        from mmnet.train.lpmflow import lpmflow_loss

        return lpmflow_loss(self.model, *batch, self.epoch, schedule=self.schedule, target=self.target)[0]


@dataclass(frozen=True)
class TrainFamily:
    """A trainable family. `objective`, `save`, `load` and `matcher` are ``"module:attribute"`` paths (imported
    when used); `objectives`, `flow_targets` and `conventions` are the `TrainConfig` values that apply to it;
    `backbone_groups`: whether ``train_backbone="lastN"`` is defined (MMNet's scale groups)."""

    name: str
    prefix: str
    objective: str
    save: str
    load: str
    matcher: str
    objectives: tuple[str, ...] = ("default",)
    flow_targets: tuple[str, ...] = ("keypoints",)
    conventions: tuple[str, ...] = ("center",)
    rptc_schedules: tuple[str, ...] = ("code",)
    loss_levels: bool = False
    backbone_groups: bool = False

    def make_objective(self, model: nn.Module, config: TrainConfig) -> Objective:
        return _resolve(self.objective)(model, config)

    def save_weights(self, model: nn.Module, directory: str | Path, **kwargs: Any) -> Path:
        """The family's ``save_pretrained`` (``dtype``, ``readout``, ``extra`` keywords)."""
        return _resolve(self.save)(model, directory, **kwargs)

    def load_weights(self, name_or_path: str | Path) -> nn.Module:
        return _resolve(self.load)(name_or_path)

    def make_matcher(self, model: nn.Module, **kwargs: Any) -> Any:
        return _resolve(self.matcher)(model, **kwargs)

    def check_config(self, config: TrainConfig) -> None:
        """InputError for a `TrainConfig` setting that does not apply to this family, naming what does."""
        what = f"{self.prefix}<...> models"
        for field, allowed in (
            ("objective", self.objectives),
            ("flow_target", self.flow_targets),
            ("convention", self.conventions),
            ("rptc_schedule", self.rptc_schedules),
        ):
            value = getattr(config, field)
            if value not in allowed:
                raise InputError(
                    f"{field} {value!r} does not apply to {what}; allowed: {', '.join(map(repr, allowed))}"
                )
        if config.loss_levels and not self.loss_levels:
            raise InputError(f"loss_levels {config.loss_levels} applies to mmnet_<...> models only; use 0 for {what}")
        mode = config.train_backbone
        if mode not in ("frozen", "full") and not self.backbone_groups:
            raise InputError(
                f"train_backbone {mode!r} needs MMNet's backbone scale groups; {what} allow 'frozen' or 'full'"
            )

    def check_readout(self, readout: Any) -> dict[str, Any]:
        """A release readout: a dict the family's matcher accepts (MMNet: `ReadoutConfig` fields; CATs and
        LPMFlow: ``{"preset": name}``). Checked before training so a bad value fails at once."""
        if not isinstance(readout, dict):
            raise InputError(f'readout must be a JSON object such as {{}} or {{"level": 2}}, got {describe(readout)}')
        if self.name == "mmnet":
            from mmnet.matching.readouts import ReadoutConfig

            ReadoutConfig.from_dict(readout)
        else:
            check_keys("readout key(s)", readout, ["preset"])
            if "preset" in readout and not isinstance(readout["preset"], str):
                raise InputError(f"readout preset must be a preset name (a string), got {describe(readout['preset'])}")
        return dict(readout)


FAMILIES: dict[str, TrainFamily] = {
    "mmnet": TrainFamily(
        "mmnet",
        "mmnet_",
        "mmnet.train.families:MMNetObjective",
        "mmnet.zoo.hub:save_pretrained",
        "mmnet.zoo:from_pretrained",
        "mmnet.matching.mmnet:Matcher",
        conventions=("center", "corner"),
        loss_levels=True,
        backbone_groups=True,
    ),
    "cats": TrainFamily(
        "cats",
        "cats_",
        "mmnet.train.families:CatsObjective",
        "mmnet.matching.cats:save_cats",
        "mmnet.matching.cats:load_cats",
        "mmnet.matching.cats:CatsMatcher",
        objectives=("default", "flow", "keypoint"),
        flow_targets=("keypoints", "official"),
    ),
    "lpmflow": TrainFamily(
        "lpmflow",
        "lpmflow_",
        "mmnet.train.families:LpmflowObjective",
        "mmnet.matching.lpmflow:save_lpmflow",
        "mmnet.matching.lpmflow:load_lpmflow",
        "mmnet.matching.lpmflow:LpmflowMatcher",
        flow_targets=("keypoints", "official"),
        rptc_schedules=("code", "supplement"),
    ),
}


def family_for_architecture(architecture: str) -> TrainFamily:
    """The family of an architecture name (``cats_resnet101``); InputError listing the trainable ones."""
    for family in FAMILIES.values():
        if str(architecture).startswith(family.prefix):
            return family
    raise InputError(
        f"{architecture!r} is not a trainable architecture; mmnet trains "
        + ", ".join(f"{f.prefix}<...>" for f in FAMILIES.values())
    )


def family_of(model: nn.Module) -> TrainFamily:
    """The family of a model (by its ``architecture``)."""
    architecture = getattr(model, "architecture", None)
    if not isinstance(architecture, str):
        raise InputError(f"model must be an MMNet, CATs or LPMFlow network (mmnet.create_model), got {describe(model)}")
    return family_for_architecture(architecture)


def architecture_of(name_or_path: str | Path) -> str:
    """The architecture behind a registered name (``cats_resnet101.spair_official``), a checkpoint folder or a hub
    id (its config.json's ``architecture``)."""
    from mmnet.zoo._registry import is_registered
    from mmnet.zoo.hub import read_config

    name = str(name_or_path)
    if not Path(name).expanduser().exists() and is_registered(name):
        return name.partition(".")[0]
    from mmnet.zoo._factory import resolve_files

    config, _, _ = resolve_files(name_or_path)
    return str(read_config(config).get("architecture", ""))


def load_for_training(name_or_path: str | Path) -> nn.Module:
    """Released weights of any trainable family (registered name, folder or hub id), to start a run from."""
    return family_for_architecture(architecture_of(name_or_path)).load_weights(name_or_path)


__all__ = [
    "FAMILIES",
    "CatsObjective",
    "LpmflowObjective",
    "MMNetObjective",
    "Objective",
    "TrainFamily",
    "architecture_of",
    "family_for_architecture",
    "family_of",
    "load_for_training",
]
