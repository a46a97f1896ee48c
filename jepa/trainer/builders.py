"""Config -> objects: data, model, loss, optimizer, schedule, logger, callbacks, and the keyword
arguments of a trainer built from a :class:`~jepa.config.Config` (:func:`trainer_kwargs`).

``JEPATrainer(config)`` asks :func:`trainer_kwargs` for everything it needs and is then built
exactly as ``JEPATrainer(model, optimizer, ...)`` would be: construction points one way
(config -> objects -> trainer) and this module never imports the trainer.
"""

from __future__ import annotations

import copy
import inspect
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from jepa.config import Config, config_from_dict, load_config
from jepa.data import DigitsPairs, DigitsSplit
from jepa.loggers import create_logger
from jepa.models import JEPA, Encoder, Predictor, Projector, TransformerPredictor
from jepa.models.jepa import POOL_MODES
from jepa.trainer.batches import resolve_device
from jepa.trainer.callbacks import EarlyStopping, LiDAR, OnlineProbe, labelled_data
from jepa.trainer.checks import check_choice, check_int, check_number
from jepa.trainer.distributed import DistributedContext, init_distributed
from jepa.trainer.environment import setup_reproducibility
from jepa.trainer.fixed_views import FixedViews
from jepa.trainer.images import image_data, image_loaders, image_loss, image_model, is_image_run, pixel_statistics, resolve_image_config
from jepa.trainer.init_from import init_encoder_from
from jepa.trainer.losses import JEPALoss
from jepa.trainer.optimizers import create_optimizer
from jepa.trainer.recipes import build_regularizer, recipe_name
from jepa.trainer.schedulers import create_scheduler, warmup_cosine_schedule
from jepa.trainer.splits import stratified_holdout
from jepa.trainer.weight_decay import WeightDecaySchedule
from jepa.trainer.world_model_builders import TASKS, world_model_objects

__all__ = [
    "DATASETS",
    "MONITORS",
    "VALIDATION_FRACTION",
    "as_config",
    "build_datasets",
    "build_loaders",
    "build_loss",
    "build_regularizer",
    "check_training",
    "explicit_arguments",
    "model_from_config",
    "recipe_name",
    "scheduler_spec",
    "setup_training",
    "trainer_kwargs",
]

#: Datasets a config can name in ``data.dataset`` (``image_folder``: an image run, :mod:`jepa.trainer.images`).
DATASETS = ("digits", "image_folder")
#: Fraction of the training split held out (stratified) to validate on.
VALIDATION_FRACTION = 0.1
#: What ``training.validation.monitor`` may name (``auto``: ``val_accuracy`` when the online probe runs).
MONITORS = ("auto", "val_loss", "val_accuracy", "val_knn_accuracy")


def as_config(config: Any) -> Config:
    """A :class:`~jepa.config.Config` from a Config, a YAML path / shipped config name, or a nested dict."""
    if isinstance(config, Config):
        return config
    if isinstance(config, (str, os.PathLike)):
        return load_config(config)
    if isinstance(config, Mapping):
        return config_from_dict(dict(config))
    raise TypeError(f"expected a Config, a YAML path, a shipped config name or a dict; got {type(config).__name__}")


def check_training(config: Config) -> None:
    """Refuse training settings that cannot run, before anything is built."""
    t = config.training
    check_choice("training.optimizer.type", t.optimizer.type.lower(), ("adamw", "adam", "sgd", "rmsprop", "lion"))
    check_choice("training.scheduler.type", t.scheduler.type.lower(), ("cosine", "linear", "step", "constant", "plateau"))
    check_number("training.learning_rate", t.learning_rate, low=0, low_open=True, noun="")
    check_int("training.epochs", t.epochs, minimum=1, noun="")
    check_int("training.batch_size", t.batch_size, minimum=1, noun="")
    check_choice("training.strategy", t.strategy, ("ddp", "fsdp"))
    check_number("training.weight_decay_end", t.weight_decay_end, low=0, optional=True, noun="")
    check_number("training.scheduler.start_lr", t.scheduler.start_lr, low=0, high=t.learning_rate, optional=True, noun="")


def _digits_subset(pairs: DigitsPairs, index: np.ndarray) -> DigitsPairs:
    """``pairs`` restricted to the samples at ``index`` (same views, same settings)."""
    part = copy.copy(pairs)
    d = pairs.data
    part.data = DigitsSplit(images=d.images[index], tokens=d.tokens[index], labels=d.labels[index])
    return part


def build_datasets(config: Config) -> tuple[Dataset, Dataset]:
    """Train and validation datasets named by ``config.data.dataset``.

    The validation set is :data:`VALIDATION_FRACTION` of the training split, held out (stratified,
    chosen by ``data.split_seed``), with fixed views (:class:`~jepa.trainer.fixed_views.FixedViews`):
    it selects checkpoints and stops early, so it is neither the split the probes report on (the
    test split) nor random from one call to the next.
    """
    data = config.data
    check_choice("data.dataset", data.dataset, DATASETS)
    if is_image_run(config):
        raise ValueError(
            f"build_datasets builds the digits pairs of the token JEPA; this config is an image run "
            f"(data.dataset={data.dataset!r}, model.arch={config.model.arch!r}): see jepa.trainer.images.image_data"
        )
    pairs = DigitsPairs(
        "train",
        patch=data.patch_size,
        max_shift=data.max_shift,
        noise=data.noise,
        context_mask_ratio=data.context_mask_ratio,
        mask_mode=data.mask_mode,
        max_rotation=data.max_rotation,
        max_scale=data.max_scale,
        clean_target=data.clean_target,
        seed=data.split_seed,
    )
    kept, held = stratified_holdout(pairs.labels.numpy(), VALIDATION_FRACTION, data.split_seed)
    return _digits_subset(pairs, kept), FixedViews(_digits_subset(pairs, held), seed=data.split_seed)


def model_from_config(config: Config, input_dim: int, num_tokens: int) -> JEPA:
    """The JEPA described by ``config.model`` for tokens of size ``input_dim``."""
    m = config.model
    encoder = Encoder(
        hidden_dim=m.hidden_dim,
        input_dim=m.input_dim or input_dim,
        num_layers=m.encoder_layers,
        num_heads=m.num_heads,
        mlp_ratio=m.mlp_ratio,
        dropout=m.dropout,
        max_seq_len=num_tokens,
    )
    check_choice("model.predictor", m.predictor, ("mlp", "transformer"))
    if m.predictor == "mlp":
        predictor: torch.nn.Module = Predictor(hidden_dim=m.hidden_dim, num_layers=m.predictor_layers, mlp_dim=m.predictor_dim)
    else:
        predictor = TransformerPredictor(
            hidden_dim=m.hidden_dim, predictor_dim=m.predictor_dim, depth=m.predictor_layers, num_heads=m.num_heads, max_seq_len=num_tokens
        )
    check_int("model.projector_hidden_dim", m.projector_hidden_dim, minimum=0)
    check_int("model.projector_dim", m.projector_dim, minimum=0)
    projector = Projector(m.hidden_dim, m.projector_hidden_dim, m.projector_dim) if m.projector_hidden_dim and m.projector_dim else None
    return JEPA(
        encoder=encoder,
        predictor=predictor,
        target_encoder=m.target_encoder,
        momentum=m.ema_momentum,
        momentum_end=m.ema_momentum_end,
        projector=projector,
        pool=check_choice("model.pool", m.pool, POOL_MODES),
    )


def build_loss(config: Config) -> JEPALoss:
    """The :class:`~jepa.trainer.losses.JEPALoss` of ``config.loss`` (no stop-gradient on the target when
    ``model.target_encoder`` is ``"none"``)."""
    lc = config.loss
    return JEPALoss(
        loss=lc.type,
        normalize_target=lc.normalize_target,
        target_norm=lc.target_norm,
        token_weight=lc.token_weight,
        global_weight=lc.global_weight,
        var_weight=lc.var_weight,
        var_gamma=lc.var_gamma,
        cov_weight=lc.cov_weight,
        regularize=lc.regularize,
        regularizer=build_regularizer(config, distributed=lc.regularize != "prediction"),
        regularizer_weight=lc.regularizer_weight,
        stop_gradient=config.model.target_encoder != "none",
    )


def build_loaders(config: Config, train_set: Dataset, val_set: Dataset | None) -> tuple[DataLoader, DataLoader | None]:
    """Shuffled training loader (incomplete last batch dropped) and in-order validation loader."""
    t = config.training
    check_int("training.batch_size", t.batch_size, minimum=1, noun="")
    if len(train_set) < t.batch_size:
        raise ValueError(f"training.batch_size={t.batch_size} is larger than the training set ({len(train_set)} samples)")
    train = DataLoader(train_set, batch_size=t.batch_size, shuffle=True, drop_last=True, num_workers=config.data.num_workers)
    val = DataLoader(val_set, batch_size=t.batch_size, shuffle=False, num_workers=config.data.num_workers) if val_set is not None else None
    return train, val


class _ConfigScheduler:
    """Builds ``create_scheduler`` from the config once the trainer knows the number of steps."""

    def __init__(self, config: Config) -> None:
        self.config = config

    def __call__(self, optimizer: torch.optim.Optimizer, total_steps: int) -> Any:
        t = self.config.training
        per_step = t.scheduler.type.lower() != "plateau"
        return create_scheduler(
            optimizer,
            scheduler_type=t.scheduler.type.lower(),
            max_epochs=t.epochs,
            warmup_epochs=int(t.scheduler.warmup_epochs),
            min_lr=t.scheduler.min_lr,
            steps_per_epoch=max(1, total_steps // t.epochs) if per_step else None,
        )


class _StartLRCosine:
    """Warmup from ``training.scheduler.start_lr`` then cosine, sized once the number of steps is known."""

    def __init__(self, config: Config) -> None:
        t = config.training
        self.warmup_fraction = _warmup_fraction(config)
        self.min_lr_ratio = min(1.0, t.scheduler.min_lr / t.learning_rate)
        self.start_ratio = t.scheduler.start_lr / t.learning_rate

    def __call__(self, optimizer: torch.optim.Optimizer, total_steps: int) -> Any:
        warmup = int(round(self.warmup_fraction * total_steps))
        return warmup_cosine_schedule(optimizer, total_steps, warmup, self.min_lr_ratio, self.start_ratio)


def scheduler_spec(config: Config) -> Any:
    """``"cosine"`` (the trainer's own warmup+cosine sized to the run; warming up from
    ``training.scheduler.start_lr`` when set) or a factory for the others."""
    if config.training.scheduler.type.lower() == "cosine":
        return "cosine" if config.training.scheduler.start_lr is None else _StartLRCosine(config)
    return _ConfigScheduler(config)


def _warmup_fraction(config: Config) -> float:
    t = config.training
    return min(0.5, t.scheduler.warmup_epochs / t.epochs) if t.scheduler.warmup_epochs else 0.05


def _logger(config: Config) -> Any:
    return create_logger(config) if config.logging.loggers else None


def explicit_arguments(fn: Any, args: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of ``args`` (arguments of ``fn``) that differ from ``fn``'s defaults: what a
    caller passing a config chose explicitly (those replace the config's values)."""
    params = inspect.signature(fn).parameters
    plain = (str, int, float, bool, type(None))

    def is_default(name: str, value: Any) -> bool:
        default = params[name].default
        return value is default or (isinstance(value, plain) and type(value) is type(default) and value == default)

    return {k: v for k, v in args.items() if not is_default(k, v)}


def trainer_kwargs(config: Any, given: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The keyword arguments of :class:`~jepa.trainer.trainer.BaseTrainer` for ``config``.

    ``given``: the arguments the caller passed explicitly (those that differ from their defaults);
    each replaces the config's value, except ``callbacks``, which come before the config's own
    (early stopping when ``training.validation.patience`` is set). A ``distributed=True`` request
    joins the process group first (its device is ``cuda:LOCAL_RANK``), so the model is built
    where it trains. ``torch.manual_seed(training.seed)`` is set before the model is built.
    """
    given = dict(given or {})
    config = as_config(config)
    check_training(config)
    t = config.training
    ctx = given.get("distributed")
    if ctx and not isinstance(ctx, DistributedContext):
        ctx = init_distributed(given.get("world_size"), given.get("local_rank"), given.get("device", t.device), rank=given.get("distributed_rank"))
        given["distributed"] = ctx
    device = ctx.device if ctx else resolve_device(given.get("device", t.device))
    on_device = given.get("strategy", t.strategy) != "fsdp"  # (FSDP moves each shard to the device itself)
    task_callbacks: list[Any] = []
    if check_choice("task", config.task, TASKS) == "world_model":  # trajectories, WorldModel, its loss and offline evaluation
        task = world_model_objects(config, device)
        train_set, val_set, model = task["train_set"], task["val_set"], task["model"]
        train_loader, val_loader = build_loaders(config, train_set, val_set)
        loss_fn: Any = task["loss_fn"]
        task_callbacks = task["callbacks"]
        probe_data: tuple[Any, Any] = (None, None)
    elif is_image_run(config):
        # I-JEPA on images: sizes left open are resolved into a copy (the trainer's config says what ran)
        config = resolve_image_config(copy.deepcopy(config), device)
        t = config.training
        data = image_data(config)
        pixel_mean, pixel_std = pixel_statistics(config, data)
        torch.manual_seed(t.seed)
        model = image_model(config, data.in_chans, pixel_mean, pixel_std)
        train_loader, val_loader = image_loaders(config, data, *((ctx.rank, ctx.world_size) if ctx else (0, 1)))
        loss_fn = image_loss(config)
        probe_data = data.online_probe or (None, None)
    else:
        train_set, val_set = build_datasets(config)
        torch.manual_seed(t.seed)
        model = model_from_config(config, input_dim=train_set.token_dim, num_tokens=train_set.num_tokens)
        train_loader, val_loader = build_loaders(config, train_set, val_set)
        loss_fn = build_loss(config)
        probe_data = (labelled_data(train_set), labelled_data(val_set))
    if config.model.init_from:
        init_encoder_from(model, config.model.init_from)
    if on_device:
        model = model.to(device)
    optimizer = create_optimizer(
        model, optimizer_type=t.optimizer.type, learning_rate=t.learning_rate, weight_decay=t.weight_decay,
        betas=tuple(t.optimizer.betas), eps=t.optimizer.eps, device=device,
    )
    labelled = probe_data if t.validation.probe else (None, None)
    probe = OnlineProbe(*labelled, seed=t.seed) if None not in labelled else None
    monitor = check_choice("training.validation.monitor", t.validation.monitor, MONITORS)
    if monitor == "auto":
        monitor = "val_accuracy" if probe is not None else "val_loss"
    elif monitor != "val_loss" and probe is None:
        raise ValueError(f"training.validation.monitor={monitor!r} needs the online probe: labelled data and training.validation.probe: true")
    mode = "min" if monitor == "val_loss" else "max"
    own_callbacks = task_callbacks + ([probe] if probe is not None else [])
    if t.validation.patience is not None:
        own_callbacks.append(EarlyStopping(monitor=monitor, patience=t.validation.patience, mode=mode))
    every = config.logging.collapse_check_every_n_steps
    if every:
        own_callbacks.append(LiDAR(every_n_steps=every, seed=t.seed))
    if t.weight_decay_end is not None:
        own_callbacks.append(WeightDecaySchedule(t.weight_decay, t.weight_decay_end))
    kwargs: dict[str, Any] = {
        "config": config,
        "model": model,
        "optimizer": optimizer,
        "scheduler": scheduler_spec(config),
        "train_loader": train_loader,
        "val_loader": val_loader,
        "num_epochs": t.epochs,
        "loss_fn": loss_fn,
        "gradient_clip_norm": t.gradient_clip,
        "gradient_accumulation": t.gradient_accumulation,
        "progress_bar": config.logging.progress_bar,
        # world-model runs keep checkpoints next to metrics.json (jepa plan --checkpoint runs/wm/best_model.pt)
        "save_dir": str(Path(config.logging.output_dir) / ("" if config.task == "world_model" else "checkpoints")),
        "log_every_n_steps": config.logging.log_every_n_steps,
        "warmup_fraction": _warmup_fraction(config),
        "min_lr_ratio": min(1.0, t.scheduler.min_lr / t.learning_rate),
        "mixed_precision": "bf16" if t.mixed_precision else None,
        "val_every_n_epochs": t.validation.frequency,
        "collapse_check_every_n_steps": config.logging.collapse_check_every_n_steps or None,
        "strategy": t.strategy,
        "activation_checkpointing": t.activation_checkpointing,
        "save_best": True if monitor == "val_loss" else (monitor, mode),
    }
    callbacks = list(given.pop("callbacks", None) or []) + own_callbacks
    kwargs.update(given)
    kwargs["device"] = device
    kwargs["callbacks"] = callbacks
    if "logger" not in given:
        kwargs["logger"] = _logger(config)
    return kwargs


def setup_training(config: Any) -> tuple[torch.device, torch.nn.Module, DataLoader]:
    """Device, model and training DataLoader described by a :class:`~jepa.config.Config`.

    ``config`` is a ``Config``, a plain dict in the YAML layout, or a path/shipped name accepted by
    :func:`jepa.config.load_config`. Seeds python/numpy/torch from ``config.training.seed`` (via
    :func:`~jepa.trainer.environment.setup_reproducibility`), resolves ``config.training.device``
    (``"auto"`` picks CUDA when available), builds the training data of ``config.data`` and the
    model of ``config.model`` (input size taken from the data unless ``model.input_dim`` is set),
    moves the model to the device and returns ``(device, model, train_loader)``.
    """
    try:
        config = as_config(config)
    except TypeError:
        raise TypeError(f"setup_training: config must be a jepa.config.Config, a dict or a config path, got {type(config).__name__}") from None
    device = resolve_device(config.training.device)
    setup_reproducibility(config.training.seed)
    if is_image_run(config):
        config = resolve_image_config(copy.deepcopy(config), device)
        data = image_data(config)
        model = image_model(config, data.in_chans, *pixel_statistics(config, data)).to(device)
        return device, model, image_loaders(config, data)[0]
    train_set, _ = build_datasets(config)
    model = model_from_config(config, input_dim=train_set.token_dim, num_tokens=train_set.num_tokens).to(device)
    train_loader, _ = build_loaders(config, train_set, None)
    return device, model, train_loader
