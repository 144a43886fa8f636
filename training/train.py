"""Train an EdgeFace model: ``python -m training.train CONFIG [--resume] [key=value ...]``.

One process without torchrun; ``torchrun --nproc_per_node=N -m training.train CONFIG`` for DDP
(NCCL on GPUs, gloo on CPU). Each rank holds its shard of the Partial FC class centres, so a run
resumes (``--resume``) or restarts (``init_from``) on the same number of ranks.

Output folder (``cfg.output``): ``checkpoint_rank{R}.pt`` (backbone, this rank's Partial FC shard,
optimiser, scheduler, step, RNG; written atomically), ``model.pt`` (backbone only: loads with
``training.models.load_model(network, path)``), ``log.csv``, ``config.json`` and, when
TensorBoard is installed, ``tensorboard/``.
"""

from __future__ import annotations

import argparse
import ast
import csv
import inspect
import json
import math
import os
import random
import runpy
import sys
import time
import warnings
from contextlib import nullcontext
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from training.common import open_detector, torch_embed
from training.data import make_loader, open_dataset, set_epoch
from training.evaluation import EvalError
from training.evaluation.backends import Backend
from training.evaluation.embedding import FaceFinder
from training.evaluation.pairsets import read_bin, read_pairs_tsv
from training.evaluation.run import evaluate as evaluate_pair_set
from training.losses import CombinedMarginLoss, PartialFC
from training.models import CheckpointMismatch, get_model

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


class TrainError(ValueError):
    """A user mistake (config, data, checkpoint) reported as one line."""


# --- config ------------------------------------------------------------------------------------
def _read_config_file(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    if not path.is_file():
        raise TrainError(f"config not found: {path}")
    if path in seen:
        raise TrainError(f"config base loop: {' -> '.join(map(str, (*seen, path)))}")
    ns = runpy.run_path(str(path))
    if not isinstance(ns.get("config"), dict):
        raise TrainError(f"{path}: defines no `config = dict(...)`")
    if path == CONFIG_DIR / "base.py":
        return dict(ns["config"])
    parent = path.parent / ns["base"] if "base" in ns else CONFIG_DIR / "base.py"
    merged = _read_config_file(parent.resolve(), (*seen, path))
    for key in ns["config"]:
        if key not in merged:
            raise TrainError(f"{path}: unknown config key {key!r}")
    return {**merged, **ns["config"]}


def _parse_value(text: str) -> object:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # a bare string such as a path


def load_config(path: str | Path, overrides: list[str] = ()) -> SimpleNamespace:
    """The file over ``configs/base.py`` (and any ``base`` chain), then ``key=value`` overrides."""
    cfg = _read_config_file(Path(path).resolve())
    for item in overrides:
        key, eq, value = item.partition("=")
        if not eq:
            raise TrainError(f"override {item!r} is not key=value")
        if key not in cfg:
            raise TrainError(f"unknown config key {key!r} in override {item!r}")
        cfg[key] = _parse_value(value)
    if cfg["gradient_acc"] < 1 or cfg["batch_size"] < 1:
        raise TrainError("batch_size and gradient_acc must be >= 1")
    if cfg["optimizer"] != "adamw":
        raise TrainError(f"optimizer {cfg['optimizer']!r} is not supported (adamw)")
    if not cfg["start_epoch"] < cfg["num_epoch"]:
        raise TrainError(f"start_epoch {cfg['start_epoch']} must be below num_epoch "
                         f"{cfg['num_epoch']}")
    return SimpleNamespace(**cfg)


# --- distributed -------------------------------------------------------------------------------
def setup_distributed() -> tuple[int, int, torch.device]:
    """(rank, world_size, device); initialises the process group under torchrun."""
    cuda = torch.cuda.is_available()
    if "RANK" not in os.environ:
        return 0, 1, torch.device("cuda" if cuda else "cpu")
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl" if cuda else "gloo")
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    return dist.get_rank(), dist.get_world_size(), device


def _same_on_all_ranks(value: int) -> bool:
    if not dist.is_initialized():
        return True
    t = torch.tensor([value, -value], dtype=torch.int64)
    dist.all_reduce(t, dist.ReduceOp.MAX)  # max(v) == min(v) on every rank
    return int(t[0]) == -int(t[1])


# --- checkpoints -------------------------------------------------------------------------------
def atomic_save(obj: object, path: Path) -> None:
    """Write to a temp file in the same folder, fsync, then rename: never a half-written file."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _read_checkpoint(path: Path, world_size: int) -> dict:
    if not path.is_file():
        raise TrainError(f"checkpoint not found: {path}")
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if ckpt.get("world_size") != world_size:
        raise TrainError(f"{path} was written by {ckpt.get('world_size')} rank(s); run with "
                         f"--nproc_per_node={ckpt.get('world_size')} (Partial FC is sharded)")
    return ckpt


# --- verification during training --------------------------------------------------------------
class LiveBackend(Backend):
    """The model being trained, embedding without a checkpoint round trip."""

    name = "training"

    def __init__(self, model: nn.Module, device: torch.device, batch: int = 64) -> None:
        self.model, self.device, self.batch = model, device, batch

    def embed(self, crops: np.ndarray) -> np.ndarray:
        return torch_embed(self.model, crops, self.batch, self.device)


class Verifier:
    """10-fold accuracy of the live backbone on each target, through ``training.evaluation``
    (the same protocol as ``python -m training.evaluate``: crop + flip embeddings, cosine scores).

    Targets: insightface ``.bin`` files (aligned crops) or pairs TSVs (photos: YuNet finds and
    aligns the largest face at score 0.8, the evaluate CLI's defaults). Pair files are read
    once, at start, so a wrong path fails before the first step, not hours later.
    """

    def __init__(self, targets: list[str], device: torch.device) -> None:
        self.device = device
        try:
            self.sets = [read_bin(t) if str(t).endswith(".bin") else read_pairs_tsv(t)
                         for t in targets]
        except EvalError as e:
            raise TrainError(f"val_targets: {e}") from None
        self.finder = (FaceFinder(open_detector("yunet", 0.8))
                       if any(not ps.aligned for ps in self.sets) else None)

    def __call__(self, backbone: nn.Module) -> dict[str, float]:
        backend = LiveBackend(backbone, self.device)
        return {ps.name: evaluate_pair_set(ps, backend, self.finder, progress=False)
                .report.kfold.mean for ps in self.sets}


# --- training ----------------------------------------------------------------------------------
class Trainer:
    def __init__(self, cfg: SimpleNamespace, rank: int = 0, world_size: int = 1,
                 device: torch.device | None = None) -> None:
        self.cfg, self.rank, self.world_size = cfg, rank, world_size
        self.device = device or torch.device("cpu")
        if cfg.fp16 and self.device.type != "cuda":
            raise TrainError("fp16 needs a GPU; set fp16=False on CPU")
        dataset = open_dataset(cfg.rec, cfg.augment, cfg.seed, cfg.align)
        self.out = Path(cfg.output)
        self.out.mkdir(parents=True, exist_ok=True)
        self.num_classes = int(cfg.num_classes or dataset.num_classes)
        self.loader = make_loader(dataset, cfg.batch_size, rank, world_size, cfg.seed,
                                  cfg.num_workers, pin_memory=self.device.type == "cuda")
        self.steps_per_epoch = len(self.loader) // cfg.gradient_acc
        if self.steps_per_epoch < 1:
            raise TrainError(f"an epoch holds {len(self.loader)} batches, fewer than "
                             f"gradient_acc={cfg.gradient_acc}")
        self.total_steps = (cfg.num_epoch - cfg.start_epoch) * self.steps_per_epoch
        self.warmup_steps = cfg.warmup_epoch * self.steps_per_epoch

        torch.manual_seed(cfg.seed)  # the same backbone on every rank (DDP also broadcasts it)
        self.backbone = get_model(cfg.network).train().to(self.device)
        torch.manual_seed(cfg.seed + rank)  # distinct Partial FC init and sampling per rank
        margin = CombinedMarginLoss(cfg.scale, *cfg.margin_list)
        self.pfc = PartialFC(margin, cfg.embedding_size, self.num_classes, cfg.sample_rate,
                             rank, world_size).to(self.device)
        self.model: nn.Module = self.backbone
        if world_size > 1:
            # CPU depthwise-conv grads come back with another stride on a size-1 axis: DDP
            # warns on every rank and step; the layout is the same, the note is noise.
            warnings.filterwarnings("ignore", message="Grad strides do not match bucket view")
            # Buffers are not synced on each forward (EdgeNeXt's are constants); torch 2.14
            # renamed the switch and warns on every rank for the old name.
            sync = ("forward_sync_buffers" if "forward_sync_buffers" in
                    inspect.signature(DistributedDataParallel).parameters else "broadcast_buffers")
            self.model = DistributedDataParallel(
                self.backbone, device_ids=[self.device.index] if self.device.type == "cuda"
                else None, **{sync: False})
        self.optimizer = torch.optim.AdamW(
            [{"params": self.backbone.parameters()}, {"params": self.pfc.parameters()}],
            lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self.lr_factor)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.fp16)
        self.step = 0  # optimiser steps taken in this stage
        self.verifier = (Verifier(cfg.val_targets, self.device)
                         if cfg.val_targets and rank == 0 else None)

    def lr_factor(self, step: int) -> float:
        """Linear warm-up, then polynomial decay to 0 at the stage's last step."""
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        rest = max(1, self.total_steps - self.warmup_steps)
        return max(0.0, 1 - (step - self.warmup_steps) / rest) ** self.cfg.lr_power

    # state
    def state_dict(self) -> dict:
        return {"backbone": self.backbone.state_dict(), "partial_fc": self.pfc.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "step": self.step, "rng": rng_state(), "network": self.cfg.network,
                "num_classes": self.num_classes, "rank": self.rank,
                "world_size": self.world_size, "class_start": self.pfc.class_start}

    def _load_weights(self, ckpt: dict, source: Path) -> None:
        if ckpt.get("network") != self.cfg.network or ckpt.get("num_classes") != self.num_classes:
            raise TrainError(f"{source} holds {ckpt.get('network')} with "
                             f"{ckpt.get('num_classes')} classes, the config "
                             f"{self.cfg.network} with {self.num_classes}")
        self.backbone.load_state_dict(ckpt["backbone"])
        self.pfc.load_state_dict(ckpt["partial_fc"])

    def checkpoint_path(self, folder: Path | None = None) -> Path:
        return (folder or self.out) / f"checkpoint_rank{self.rank}.pt"

    def save(self) -> None:
        atomic_save(self.state_dict(), self.checkpoint_path())
        if self.rank == 0:
            atomic_save({"backbone": self.backbone.state_dict(), "network": self.cfg.network,
                         "step": self.step}, self.out / "model.pt")
        if dist.is_initialized():
            dist.barrier()

    def resume(self) -> None:
        """Everything back: weights, Partial FC shard, optimiser, scheduler, step, RNG."""
        path = self.checkpoint_path()
        ckpt = _read_checkpoint(path, self.world_size)
        self._load_weights(ckpt, path)
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.step = int(ckpt["step"])
        if not _same_on_all_ranks(self.step):
            raise TrainError(f"the rank checkpoints in {self.out} are from different steps "
                             "(a crash between saves); restore a consistent set")
        set_rng_state(ckpt["rng"])

    def init_from(self, folder: str | Path) -> None:
        """The restart stage: backbone + Partial FC from a finished stage; a fresh optimiser."""
        path = self.checkpoint_path(Path(folder))
        self._load_weights(_read_checkpoint(path, self.world_size), path)

    # loop
    def fit(self, resume: bool = False) -> None:
        cfg = self.cfg
        if resume:
            self.resume()
        elif cfg.init_from:
            self.init_from(cfg.init_from)
        stop = min(self.total_steps, cfg.max_steps or self.total_steps)
        if self.rank == 0:
            how = ("resumed at" if resume else
                   f"weights of {cfg.init_from}, from" if cfg.init_from else "from")
            print(f"{cfg.network}: {len(self.loader.dataset)} images, {self.num_classes} classes, "
                  f"{self.world_size} rank(s) x {cfg.batch_size * cfg.gradient_acc} images a step, "
                  f"{self.steps_per_epoch} steps an epoch; {how} step {self.step}, to step {stop} "
                  f"of {self.total_steps} (epochs {cfg.start_epoch}-{cfg.num_epoch}); "
                  f"writing {self.out}", flush=True)
            if self.step >= stop:
                print(f"nothing to do: step {self.step} is the stop (raise max_steps to go on)",
                      flush=True)
        log = _Log(self.out, cfg, enabled=self.rank == 0)
        bar = tqdm(total=stop, initial=self.step, disable=self.rank != 0, unit="step",
                   dynamic_ncols=True)
        images_per_step = cfg.batch_size * cfg.gradient_acc * self.world_size
        losses: list[float] = []
        evaluated = None  # the step last verified, so the end does not verify it twice
        tic = time.perf_counter()
        first_epoch = cfg.start_epoch + self.step // self.steps_per_epoch
        for epoch in range(first_epoch, cfg.num_epoch):
            if self.step >= stop:
                break
            skip = (self.step % self.steps_per_epoch) * cfg.gradient_acc
            set_epoch(self.loader, epoch, skip)
            batches = iter(self.loader)
            for _ in range(self.steps_per_epoch - skip // cfg.gradient_acc):
                losses.append(self.train_step(batches))
                self.step += 1
                bar.update(1)
                if self.step % cfg.frequent == 0 or self.step == stop:
                    seconds = time.perf_counter() - tic
                    speed = images_per_step * len(losses) / seconds
                    lr = self.optimizer.param_groups[0]["lr"]
                    log.row(self.step, epoch, float(np.mean(losses)), lr, speed)
                    bar.set_postfix(loss=f"{np.mean(losses):.3f}", lr=f"{lr:.2e}",
                                    img_s=f"{speed:.1f}")
                    losses, tic = [], time.perf_counter()
                if self.step % cfg.save_every == 0 or self.step == stop:
                    self.save()
                if cfg.val_targets and cfg.verbose and self.step % cfg.verbose == 0:
                    paused = time.perf_counter()
                    self.evaluate(log)
                    evaluated = self.step
                    tic += time.perf_counter() - paused  # images/s: training time only
                if self.step >= stop:
                    break
            else:
                self.save()  # epoch end
        bar.close()
        if cfg.val_targets and evaluated != self.step:
            self.evaluate(log)
        log.close()
        if self.rank == 0:
            print(f"step {self.step}: model.pt, checkpoints and log.csv are in {self.out}",
                  flush=True)

    def train_step(self, batches: object) -> float:
        """One optimiser step over ``gradient_acc`` micro-batches; returns the mean loss."""
        cfg = self.cfg
        total = 0.0
        for micro in range(cfg.gradient_acc):
            img, label = next(batches)
            img = img.to(self.device, non_blocking=True)
            label = label.to(self.device, non_blocking=True)
            last = micro == cfg.gradient_acc - 1
            sync = nullcontext() if last or self.world_size == 1 else self.model.no_sync()
            with sync:
                with torch.autocast(self.device.type, enabled=cfg.fp16):
                    embeddings = self.model(img)
                loss = self.pfc(embeddings, label)  # float32: the margin maths needs it
                self.scaler.scale(loss / cfg.gradient_acc).backward()
            total += loss.item()
        if cfg.clip_grad_norm:
            self.scaler.unscale_(self.optimizer)
            # The backbone only, as the recipe: Partial FC centres are normalised anyway.
            nn.utils.clip_grad_norm_(self.backbone.parameters(), cfg.clip_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        if not math.isfinite(total):
            raise TrainError(f"loss is {total} at step {self.step + 1}: lower lr or check data")
        return total / cfg.gradient_acc

    def evaluate(self, log: _Log) -> None:
        if self.rank == 0:
            self.backbone.eval()
            with torch.no_grad():
                results = self.verifier(self.backbone)
            self.backbone.train()
            for name, acc in results.items():
                log.val(self.step, name, acc)
                tqdm.write(f"step {self.step}: {name} accuracy {acc:.4f}")
        if dist.is_initialized():
            dist.barrier()


class _Log:
    """CSV (always) and TensorBoard (when installed), rank 0 only."""

    FIELDS = ("step", "epoch", "loss", "lr", "images_per_s", "time")

    def __init__(self, out: Path, cfg: SimpleNamespace, enabled: bool) -> None:
        self.enabled, self.out = enabled, out
        self.tb = None
        if not enabled:
            return
        (out / "config.json").write_text(json.dumps(vars(cfg), indent=2, default=str))
        path = out / "log.csv"
        new = not path.exists()
        self.file = open(path, "a", newline="")  # noqa: SIM115 (closed in close())
        self.csv = csv.writer(self.file)
        if new:
            self.csv.writerow(self.FIELDS)
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out / "tensorboard"))
        except ImportError:
            pass

    def row(self, step: int, epoch: int, loss: float, lr: float, speed: float) -> None:
        if not self.enabled:
            return
        self.csv.writerow((step, epoch, f"{loss:.6f}", f"{lr:.6g}", f"{speed:.2f}",
                           f"{time.time():.1f}"))
        self.file.flush()
        for key, value in (("loss", loss), ("lr", lr), ("images_per_s", speed)):
            self.scalar(f"train/{key}", value, step)

    def val(self, step: int, target: str, accuracy: float) -> None:
        path = self.out / "val.csv"
        new = not path.exists()
        with open(path, "a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(("step", "target", "accuracy"))
            w.writerow((step, target, f"{accuracy:.6f}"))
        self.scalar(f"val/{target}", accuracy, step)

    def scalar(self, key: str, value: float, step: int) -> None:
        if self.tb is not None:
            self.tb.add_scalar(key, value, step)

    def close(self) -> None:
        if self.enabled:
            self.file.close()
            if self.tb is not None:
                self.tb.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.train",
                                description="Train EdgeFace (single process or under torchrun).")
    p.add_argument("config", help="a Python config file, e.g. training/configs/cpu_smoke.py")
    p.add_argument("overrides", nargs="*", help="key=value config overrides")
    p.add_argument("--resume", action="store_true",
                   help="continue from the checkpoints in the config's output folder")
    args = p.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
        rank, world_size, device = setup_distributed()
        try:
            Trainer(cfg, rank, world_size, device).fit(resume=args.resume)
        finally:
            if dist.is_initialized():
                dist.destroy_process_group()
    except (TrainError, CheckpointMismatch, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
