"""The trainer of every trainable family (MMNet, CATs, LPMFlow: `mmnet.train.families`): the family's loss,
parameter groups, schedules, AMP, accumulation, DDP, exact resume.

Training is counted in optimiser steps. The sample order of every epoch is a permutation drawn from
``(seed, epoch)`` and sharded over ranks; augmentation is a function of ``(seed, epoch, index)``; so a run
resumed from a checkpoint (model, optimiser, scheduler, scaler, RNG states, step) continues bit-identically.
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from mmnet.errors import CheckpointError, InputError
from mmnet.train.families import Objective, TrainFamily, family_of
from mmnet.train.pairs import PairSource, collate

BackboneMode = Literal["frozen", "last1", "last2", "last3", "full"]


@dataclass
class TrainConfig:
    """Every knob of a training run (stored in each checkpoint and in ``config.json`` of the run folder).

    steps: optimiser steps; batch_size: pairs per rank per forward; accumulate: forwards per step.
    lr: learning rate of the head (all but the backbone); backbone_lr_mult: factor for trainable backbone blocks.
    train_backbone: "frozen", "lastN" (the N coarsest scale groups of the backbone train) or "full".
    freeze_bn: keep the backbone's BatchNorm layers in eval mode (always true for frozen blocks).
    optimizer: "adamw" or "sgd" (momentum 0.9); schedule: "cosine" (to lr * min_lr_ratio) or "step"
    (x gamma every step_size steps), both after `warmup` linear steps. clip_grad: max grad norm (0: off).
    amp: autocast on CUDA ("bf16", "fp16" with a GradScaler, or "off"); ignored on CPU.
    loss_levels: train on the coarsest N levels only (0: all); finer levels are neither run nor changed.
    max_minutes: stop (with a checkpoint) after this much wall time in this process (0: no limit); the
    schedule still runs to `steps`, so a later `fit` resumes where it stopped.
    convention, loss_levels: MMNet's loss (pixel convention; the coarsest N levels only, 0: all).
    objective: "default" (the family's), or for CATs "flow" / "keypoint"; flow_target: "keypoints" or "official"
    (CATs, LPMFlow); rptc_schedule: "code" or "supplement" (LPMFlow). See `mmnet.train.families`.
    """

    steps: int = 1000
    batch_size: int = 4
    accumulate: int = 1
    lr: float = 3e-4
    backbone_lr_mult: float = 0.1
    weight_decay: float = 1e-4
    train_backbone: BackboneMode = "frozen"
    freeze_bn: bool = True
    optimizer: Literal["adamw", "sgd"] = "adamw"
    schedule: Literal["cosine", "step"] = "cosine"
    warmup: int = 50
    min_lr_ratio: float = 0.01
    step_size: int = 10000
    gamma: float = 0.1
    clip_grad: float = 10.0
    amp: Literal["bf16", "fp16", "off"] = "bf16"
    seed: int = 0
    num_workers: int = 0
    log_every: int = 10
    val_every: int = 0
    checkpoint_minutes: float = 5.0
    checkpoint_every: int = 0
    max_minutes: float = 0.0
    convention: Literal["center", "corner"] = "center"
    loss_levels: int = 0
    objective: Literal["default", "flow", "keypoint"] = "default"
    flow_target: Literal["keypoints", "official"] = "keypoints"
    rptc_schedule: Literal["code", "supplement"] = "code"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from mmnet.checks import check_choice, check_float, check_int

        for name in ("steps", "batch_size", "accumulate", "step_size", "log_every"):
            check_int(name, getattr(self, name), min=1)
        for name in ("warmup", "seed", "num_workers", "val_every", "checkpoint_every"):
            check_int(name, getattr(self, name), min=0)
        check_float("lr", self.lr, min=0.0, min_inclusive=False)
        for name in ("backbone_lr_mult", "weight_decay", "clip_grad", "checkpoint_minutes", "max_minutes"):
            check_float(name, getattr(self, name), min=0.0)
        check_float("min_lr_ratio", self.min_lr_ratio, min=0.0, max=1.0)
        check_float("gamma", self.gamma, min=0.0, min_inclusive=False)
        check_choice("train_backbone", self.train_backbone, ("frozen", "last1", "last2", "last3", "full"))
        check_choice("optimizer", self.optimizer, ("adamw", "sgd"))
        check_choice("schedule", self.schedule, ("cosine", "step"))
        check_choice("amp", self.amp, ("bf16", "fp16", "off"))
        check_choice("convention", self.convention, ("center", "corner"))
        check_int("loss_levels", self.loss_levels, min=0)
        check_choice("objective", self.objective, ("default", "flow", "keypoint"))
        check_choice("flow_target", self.flow_target, ("keypoints", "official"))
        check_choice("rptc_schedule", self.rptc_schedule, ("code", "supplement"))
        if not isinstance(self.freeze_bn, bool):
            raise InputError(f"freeze_bn must be True or False, got {self.freeze_bn!r}")
        if not isinstance(self.extra, dict):
            raise InputError(f"extra must be a dict, got {type(self.extra).__name__}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- distributed helpers --------------------------------------------------------------------------------------


def dist_info() -> tuple[int, int]:
    """(rank, world size); (0, 1) when torch.distributed is not initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed(backend: str | None = None) -> tuple[int, int]:
    """Initialise the process group from torchrun's environment (RANK, WORLD_SIZE, MASTER_ADDR...) if present."""
    if "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1 and not dist.is_initialized():
        backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
        dist.init_process_group(backend)
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    return dist_info()


# -- parameter groups ------------------------------------------------------------------------------------------


def backbone_trainable_prefixes(model: nn.Module, mode: str) -> list[str]:
    """Parameter-name prefixes of the backbone blocks that train under `mode`."""
    if mode == "frozen":
        return []
    if mode == "full":
        return ["backbone."]
    if not (mode.startswith("last") and mode[4:].isdigit()):
        raise InputError(f"train_backbone must be frozen, lastN or full, got {mode!r}")
    backbone: Any = model.backbone
    groups = backbone.groups[::-1][: int(mode[4:])]  # coarsest first
    return [f"backbone.body.{block}." for g in groups for block in g.blocks]


def configure_trainable(model: nn.Module, mode: str) -> list[str]:
    """Set requires_grad of the backbone according to `mode`; the head always trains. Returns the prefixes."""
    prefixes = backbone_trainable_prefixes(model, mode)
    for name, p in model.named_parameters():
        p.requires_grad_(not name.startswith("backbone.") or any(name.startswith(x) for x in prefixes))
    return prefixes


def set_train_mode(model: nn.Module, config: TrainConfig) -> None:
    """model.train(), then BatchNorm of the backbone back to eval where it is frozen (or `freeze_bn`)."""
    model.train()
    prefixes = backbone_trainable_prefixes(model, config.train_backbone)
    for name, module in model.named_modules():
        if name.startswith("backbone.") and isinstance(module, nn.modules.batchnorm._BatchNorm):
            trainable = any((name + ".").startswith(x) for x in prefixes)
            if config.freeze_bn or not trainable:
                module.eval()


def param_groups(model: nn.Module, config: TrainConfig) -> list[dict[str, Any]]:
    """Head and backbone groups, each split into decayed weights and undecayed biases/norm parameters."""
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            groups.setdefault((name.startswith("backbone."), p.ndim <= 1), []).append(p)
    out = []
    for (is_backbone, no_decay), params in sorted(groups.items()):
        lr = config.lr * (config.backbone_lr_mult if is_backbone else 1.0)
        out.append(
            {
                "params": params,
                "lr": lr,
                "initial_lr": lr,
                "weight_decay": 0.0 if no_decay else config.weight_decay,
                "name": ("backbone" if is_backbone else "head") + ("_no_decay" if no_decay else ""),
            }
        )
    return out


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    groups = param_groups(model, config)
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=0.9)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr)
    raise InputError(f"optimizer must be sgd or adamw, got {config.optimizer!r}")


def lr_factor(step: int, config: TrainConfig) -> float:
    """Learning-rate multiplier at optimiser step `step` (0-based)."""
    if config.warmup and step < config.warmup:
        return (step + 1) / config.warmup
    if config.schedule == "step":
        return config.gamma ** (step // config.step_size)
    if config.schedule != "cosine":
        raise InputError(f"schedule must be cosine or step, got {config.schedule!r}")
    t = (step - config.warmup) / max(1, config.steps - config.warmup)
    return config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


# -- data order ------------------------------------------------------------------------------------------------


class _EpochOrder(torch.utils.data.Sampler[int]):
    """This rank's share of the permutation of epoch `epoch`, from sample `start` on."""

    def __init__(self, n: int, seed: int, epoch: int, rank: int, world: int, start: int = 0) -> None:
        g = torch.Generator().manual_seed(seed * 100003 + epoch)
        perm = torch.randperm(n, generator=g).tolist()
        per_rank = n // world
        self.indices = perm[rank * per_rank : (rank + 1) * per_rank][start:]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class _AsDataset(Dataset):
    def __init__(self, source: PairSource) -> None:
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.source[index]


# -- RNG state -------------------------------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Every RNG state as tensors and plain Python values, so a checkpoint loads with ``weights_only=True``."""
    kind, keys, pos, has_gauss, cached = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state())
    state = {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_training_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a ``last.pt`` written by `Trainer.save_checkpoint` without unpickling arbitrary objects.

    Raises `CheckpointError` for a missing, truncated or crafted file (one that needs any global beyond
    tensors and plain Python values to unpickle).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"resume checkpoint not found: {path}; pass --resume none to start over")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # pickle, zip and weights_only errors come in many types
        raise CheckpointError(
            f"cannot resume from {path}: it is not a training checkpoint of tensors and plain values "
            f"({type(exc).__name__}). mmnet never unpickles arbitrary objects; delete the file or pass "
            "--resume none to start over"
        ) from exc
    missing = {"model", "optimizer", "scheduler", "scaler", "step", "rng"} - set(
        state if isinstance(state, dict) else ()
    )
    if missing:
        raise CheckpointError(f"{path} is not an mmnet training checkpoint: missing {sorted(missing)}")
    return state


# -- the trainer -----------------------------------------------------------------------------------------------

Validator = Callable[[nn.Module], dict[str, float]]


@dataclass
class _Clock:
    """Wall-clock marks of one `fit` call and the loss/throughput window of the next log row."""

    start: float = field(default_factory=time.perf_counter)
    last_checkpoint: float = field(default_factory=time.perf_counter)
    window_start: float = field(default_factory=time.perf_counter)
    losses: list[float] = field(default_factory=list)
    pairs: int = 0

    def add(self, loss: float, pairs: int) -> None:
        self.losses.append(loss)
        self.pairs += pairs

    def next_window(self, now: float) -> None:
        self.losses, self.pairs, self.window_start = [], 0, now


LOG_FIELDS = ["step", "epoch", "loss", "lr", "pairs_per_s", "elapsed_s", "metrics"]


class Trainer:
    """Train `model` on `data` (a pair source, see `mmnet.train.pairs`) into the run folder `out_dir`.

    `model` is an MMNet, CATs or LPMFlow network; its family (`mmnet.train.families`) supplies the loss, the
    save function of ``best/`` and the matcher of validation. `validate(model) -> {"name": value}` runs every
    `config.val_every` steps on rank 0 (e.g. `pck_validator`); the model is handed over in eval mode and put back
    into training mode after. Files in `out_dir`: ``config.json``, ``log.csv`` (one row per `log_every` steps and
    per validation), ``last.pt`` (the resume checkpoint, rewritten every `checkpoint_minutes` /
    `checkpoint_every` steps and at the end) and ``best/`` (the best validation's weights, when validating).
    """

    def __init__(
        self,
        model: nn.Module,
        data: PairSource,
        config: TrainConfig,
        out_dir: str | Path,
        validate: Validator | None = None,
        device: str | torch.device | None = None,
        progress: bool = True,
    ) -> None:
        self.config, self.out_dir, self.validate, self.progress = config, Path(out_dir), validate, progress
        self.rank, self.world = dist_info()
        self.family: TrainFamily = family_of(model)
        self.family.check_config(config)
        if device is None:
            device = f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.model: Any = model.to(self.device)
        self.data = data
        configure_trainable(self.model, config.train_backbone)
        self.objective: Objective = self.family.make_objective(self.model, config)
        self.loss_module: Any = self.objective
        if self.world > 1:
            self.loss_module = nn.parallel.DistributedDataParallel(
                self.objective, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        self.optimizer = make_optimizer(self.model, config)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, config), last_epoch=-1
        )
        use_amp = self.device.type == "cuda" and config.amp != "off"
        self.amp_dtype = torch.bfloat16 if config.amp == "bf16" else torch.float16
        self.amp = use_amp
        self.scaler = torch.amp.GradScaler("cuda", enabled=use_amp and config.amp == "fp16")
        self.step = 0
        self.best: float | None = None
        self.per_rank = len(data) // self.world
        self.batches_per_epoch = self.per_rank // config.batch_size
        if self.batches_per_epoch == 0:
            raise InputError(
                f"{len(data)} training pairs are too few for batch size {config.batch_size} on {self.world} process(es)"
            )
        seed_everything(config.seed + self.rank)

    # -- checkpoints --

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "best": self.best,
            "rng": rng_state(),
            "config": self.config.to_dict(),
            "model_config": self.model.config.to_dict(),
        }

    def save_checkpoint(self, path: str | Path | None = None) -> Path:
        """Write the resume checkpoint atomically (rank 0 only)."""
        path = Path(path) if path is not None else self.out_dir / "last.pt"
        if self.rank == 0:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            torch.save(self.state_dict(), tmp)
            os.replace(tmp, path)
        return path

    def load_checkpoint(self, path: str | Path) -> None:
        """Restore a resume checkpoint; only tensors and plain values are unpickled (``weights_only=True``)."""
        state = load_training_checkpoint(path, self.device)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.step, self.best = int(state["step"]), state.get("best")
        set_rng_state(state["rng"])

    # -- loop --

    def _batches(self) -> Iterator[dict[str, torch.Tensor]]:
        """Batches from the current position (step * accumulate batches into the run) on, epoch after epoch."""
        cfg = self.config
        position = self.step * cfg.accumulate
        while True:
            epoch, offset = divmod(position, self.batches_per_epoch)
            self.data.set_epoch(epoch)
            sampler = _EpochOrder(len(self.data), cfg.seed, epoch, self.rank, self.world, start=offset * cfg.batch_size)
            # the loader's own generator: creating it must not draw from the global torch RNG, which random
            # layers (dropout, LPMFlow's token replacement) use and the checkpoint restores
            loader = DataLoader(
                _AsDataset(self.data),
                batch_size=cfg.batch_size,
                sampler=sampler,
                num_workers=cfg.num_workers,
                collate_fn=collate,
                drop_last=True,
                pin_memory=self.device.type == "cuda",
                generator=torch.Generator().manual_seed(cfg.seed * 100003 + epoch + self.rank),
            )
            for batch in loader:
                position += 1
                yield batch

    @property
    def epoch(self) -> int:
        """The data epoch the next optimiser step starts in."""
        return self.step * self.config.accumulate // self.batches_per_epoch

    def _forward_backward(self, batch: dict[str, torch.Tensor], sync: bool) -> float:
        batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        context = self.loss_module.no_sync() if (self.world > 1 and not sync) else nullcontext()
        autocast = torch.autocast("cuda", dtype=self.amp_dtype) if self.amp else nullcontext()
        with context:
            with autocast:
                loss = self.loss_module(batch["src"], batch["tgt"], batch["src_kps"], batch["tgt_kps"], batch["valid"])
            self.scaler.scale(loss / self.config.accumulate).backward()
        return float(loss.detach())

    def _optimizer_step(self) -> None:
        """Clip (after unscaling), step the optimiser and the scaler, clear the gradients, advance the schedule."""
        cfg = self.config
        if cfg.clip_grad > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], cfg.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()

    def train_step(self, batches: Iterator[dict[str, torch.Tensor]]) -> tuple[float, int]:
        """One optimiser step over `accumulate` batches; returns (mean loss, pairs seen by all ranks)."""
        cfg = self.config
        self.objective.set_epoch(self.epoch)
        loss, pairs = 0.0, 0
        for micro in range(cfg.accumulate):
            batch = next(batches)
            loss += self._forward_backward(batch, sync=micro == cfg.accumulate - 1) / cfg.accumulate
            pairs += len(batch["src"]) * self.world
        self._optimizer_step()
        self.step += 1
        return loss, pairs

    def run_validation(self) -> dict[str, float]:
        if self.validate is None or self.rank != 0:
            return {}
        self.model.eval()
        try:
            with torch.no_grad():
                metrics = self.validate(self.model)
        finally:
            set_train_mode(self.model, self.config)
        return metrics

    def _validate_if_due(self) -> dict[str, float]:
        """Validation every `val_every` steps and at the last step; the best first metric is saved in ``best/``."""
        cfg = self.config
        if not cfg.val_every or (self.step % cfg.val_every and self.step != cfg.steps):
            return {}
        metrics = self.run_validation()
        if metrics and self.rank == 0:
            score = next(iter(metrics.values()))
            if self.best is None or score > self.best:
                self.best = score
                self.family.save_weights(
                    self.model, self.out_dir / "best", extra={"training": {"step": self.step, "metrics": metrics}}
                )
        return metrics

    def _log_if_due(self, clock: _Clock, metrics: dict[str, float]) -> None:
        """A log.csv row every `log_every` steps, at each validation and at the last step (rank 0)."""
        cfg = self.config
        if self.rank != 0 or not (self.step % cfg.log_every == 0 or metrics or self.step == cfg.steps):
            return
        now = time.perf_counter()
        row = [
            self.step,
            self.step * cfg.accumulate // self.batches_per_epoch,
            f"{float(np.mean(clock.losses)):.4f}",
            f"{self.scheduler.get_last_lr()[0]:.3g}",
            f"{clock.pairs / max(now - clock.window_start, 1e-9):.3f}",
            f"{now - clock.start:.1f}",
            json.dumps(metrics) if metrics else "",
        ]
        with open(self.out_dir / "log.csv", "a", newline="") as fh:
            csv.writer(fh).writerow(row)
        clock.next_window(now)

    def _checkpoint_if_due(self, clock: _Clock, end: int) -> bool:
        """Save ``last.pt`` when due (steps or minutes), out of time or at `end`; True when out of time."""
        cfg = self.config
        due = (cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0) or (
            cfg.checkpoint_minutes and time.perf_counter() - clock.last_checkpoint > 60 * cfg.checkpoint_minutes
        )
        out_of_time = bool(cfg.max_minutes) and time.perf_counter() - clock.start > 60 * cfg.max_minutes
        if due or out_of_time or self.step == end:
            self.save_checkpoint()
            clock.last_checkpoint = time.perf_counter()
        return out_of_time

    def _say(self, line: str) -> None:
        """One line for the person running the job (rank 0, stderr, beside the progress bar)."""
        if self.rank == 0:
            print(line, file=sys.stderr, flush=True)

    def _start(self, resume: str | Path | None) -> None:
        """Run folder, resume (one line saying from where), warm-up check, config.json, log header, train mode."""
        cfg = self.config
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if resume == "auto":
            resume = self.out_dir / "last.pt" if (self.out_dir / "last.pt").is_file() else None
        if resume is not None:
            self.load_checkpoint(resume)
            self._say(
                f"resuming from {resume} at step {self.step} of {cfg.steps} (to start over instead: "
                "--resume none, or fit(resume=None) with another out_dir)"
            )
        if cfg.warmup > cfg.steps:
            self._say(
                f"warning: warmup ({cfg.warmup} steps) is longer than the run ({cfg.steps} steps): the "
                f"learning rate only reaches {cfg.steps / cfg.warmup:.2g} x lr and never decays; lower "
                "--warmup or raise --steps"
            )
        if self.rank == 0:
            (self.out_dir / "config.json").write_text(
                json.dumps(
                    {
                        "train": cfg.to_dict(),
                        "architecture": self.model.architecture,
                        "model": self.model.config.to_dict(),
                        "world_size": self.world,
                    },
                    indent=2,
                    default=str,
                )
                + "\n"
            )
            log_path = self.out_dir / "log.csv"
            if not log_path.exists():
                with open(log_path, "w", newline="") as fh:
                    csv.writer(fh).writerow(LOG_FIELDS)
        set_train_mode(self.model, cfg)

    def fit(self, resume: str | Path | None = None, stop_at: int | None = None) -> dict[str, Any]:
        """Train to `config.steps` (or only up to step `stop_at`, with a checkpoint there); resume from a
        checkpoint path (or "auto": ``out_dir/last.pt`` if present)."""
        self._start(resume)
        end = self.config.steps if stop_at is None else min(stop_at, self.config.steps)
        batches, clock = self._batches(), _Clock()
        bar = tqdm(
            total=self.config.steps,
            initial=self.step,
            disable=not self.progress or self.rank != 0,
            desc="train",
            unit="step",
        )
        while self.step < end:
            loss, pairs = self.train_step(batches)
            clock.add(loss, pairs)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.2f}")
            self._log_if_due(clock, self._validate_if_due())
            if self._checkpoint_if_due(clock, end):
                break
        bar.close()
        return {"step": self.step, "best": self.best, "seconds": time.perf_counter() - clock.start}
