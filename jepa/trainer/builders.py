"""Build data, model, loss and trainer from a :class:`~jepa.config.Config`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from jepa.config import Config
from jepa.data import DigitsPairs
from jepa.models import JEPA, Encoder, Predictor, Projector, TransformerPredictor
from jepa.trainer.losses import JEPALoss

DATASETS = ("digits",)


def build_datasets(config: Config) -> tuple[Dataset, Dataset]:
    """Train and validation pair datasets named by ``config.data.dataset``."""
    data = config.data
    if data.dataset != "digits":
        raise ValueError(f"data.dataset: unknown dataset {data.dataset!r}; available: {', '.join(DATASETS)}")
    common = dict(
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
    return DigitsPairs("train", **common), DigitsPairs("test", **common)


def build_model(config: Config, input_dim: int, num_tokens: int) -> JEPA:
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
    if m.predictor == "mlp":
        predictor: torch.nn.Module = Predictor(hidden_dim=m.hidden_dim, num_layers=m.predictor_layers, mlp_dim=m.predictor_dim)
    elif m.predictor == "transformer":
        predictor = TransformerPredictor(
            hidden_dim=m.hidden_dim, predictor_dim=m.predictor_dim, depth=m.predictor_layers, num_heads=m.num_heads, max_seq_len=num_tokens
        )
    else:
        raise ValueError(f"model.predictor: unknown predictor {m.predictor!r}; expected 'mlp' or 'transformer'")
    if m.projector_hidden_dim < 0 or m.projector_dim < 0:
        raise ValueError(f"model.projector_hidden_dim / projector_dim must be >= 0, got {m.projector_hidden_dim}, {m.projector_dim}")
    projector = Projector(m.hidden_dim, m.projector_hidden_dim, m.projector_dim) if m.projector_hidden_dim and m.projector_dim else None
    return JEPA(
        encoder=encoder,
        predictor=predictor,
        target_encoder=m.target_encoder,
        momentum=m.ema_momentum,
        momentum_end=m.ema_momentum_end,
        projector=projector,
    )


def build_loss(config: Config) -> JEPALoss:
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
    )


def build_loaders(config: Config, train_set: Dataset, val_set: Dataset | None) -> tuple[DataLoader, DataLoader | None]:
    t = config.training
    if t.batch_size < 1:
        raise ValueError(f"training.batch_size must be >= 1, got {t.batch_size}")
    if len(train_set) < t.batch_size:
        raise ValueError(f"training.batch_size={t.batch_size} is larger than the training set ({len(train_set)} samples)")
    train = DataLoader(train_set, batch_size=t.batch_size, shuffle=True, drop_last=True, num_workers=config.data.num_workers)
    val = DataLoader(val_set, batch_size=t.batch_size, shuffle=False, num_workers=config.data.num_workers) if val_set is not None else None
    return train, val


def as_config(config: Any) -> Config:
    """A :class:`Config` from a Config, a YAML path / shipped config name, or a nested dict."""
    from jepa.config import config_from_dict, load_config  # noqa: PLC0415

    if isinstance(config, Config):
        return config
    if isinstance(config, (str, os.PathLike)):
        return load_config(config)
    if isinstance(config, dict):
        return config_from_dict(config)
    raise TypeError(f"expected a Config, a YAML path, a shipped config name or a dict; got {type(config).__name__}")


def from_config(config: Any, save_dir: str | None = None, device: torch.device | None = None) -> dict[str, Any]:
    """Everything a trainer needs, built from ``config``: data loaders, model, optimizer, schedule
    spec, loss, logger and callbacks (early stopping when ``training.validation.patience`` is set).

    ``device`` overrides ``training.device`` (the distributed trainer passes ``cuda:LOCAL_RANK``)."""
    from jepa.trainer.callbacks import EarlyStopping  # noqa: PLC0415
    from jepa.trainer.optimizers import create_optimizer  # noqa: PLC0415
    from jepa.trainer.trainer import resolve_device  # noqa: PLC0415

    config = as_config(config)
    t = config.training
    _check_training(config)
    train_set, val_set = build_datasets(config)
    torch.manual_seed(t.seed)
    model = build_model(config, input_dim=train_set.token_dim, num_tokens=train_set.num_tokens)
    train_loader, val_loader = build_loaders(config, train_set, val_set)
    device = resolve_device(t.device) if device is None else torch.device(device)
    model = model.to(device)
    optimizer = create_optimizer(
        model, optimizer_type=t.optimizer.type, learning_rate=t.learning_rate, weight_decay=t.weight_decay,
        betas=tuple(t.optimizer.betas), eps=t.optimizer.eps, device=device,
    )
    callbacks = []
    if t.validation.patience is not None:
        callbacks.append(EarlyStopping(monitor="val_loss", patience=t.validation.patience))
    logger = None
    if config.logging.loggers:
        try:
            from jepa.loggers import create_logger  # noqa: PLC0415
        except ImportError:
            create_logger = None
        if create_logger is not None:
            logger = create_logger(config)
    return {
        "config": config,
        "train_loader": train_loader,
        "val_loader": val_loader,
        "num_epochs": t.epochs,
        "model": model,
        "optimizer": optimizer,
        "scheduler": _scheduler_spec(config, len(train_loader)),
        "device": device,
        "loss_fn": build_loss(config),
        "gradient_clip_norm": t.gradient_clip,
        "gradient_accumulation": t.gradient_accumulation,
        "progress_bar": config.logging.progress_bar,
        "save_dir": save_dir or str(Path(config.logging.output_dir) / "checkpoints"),
        "log_every_n_steps": config.logging.log_every_n_steps,
        "warmup_fraction": _warmup_fraction(config),
        "min_lr_ratio": min(1.0, t.scheduler.min_lr / t.learning_rate),
        "mixed_precision": "bf16" if t.mixed_precision else None,
        "val_every_n_epochs": t.validation.frequency,
        "collapse_check_every_n_steps": config.logging.collapse_check_every_n_steps or None,
        "logger": logger,
        "callbacks": callbacks,
    }


class _ConfigScheduler:
    """Builds ``create_scheduler`` from the config once the trainer knows the number of steps."""

    def __init__(self, config: Config, steps_per_epoch: int) -> None:
        self.config, self.steps_per_epoch = config, steps_per_epoch

    def __call__(self, optimizer, total_steps: int):
        from jepa.trainer.schedulers import create_scheduler  # noqa: PLC0415

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


def _scheduler_spec(config: Config, steps_per_epoch: int):
    """``"cosine"`` (the trainer's own warmup+cosine sized to the run) or a factory for the others."""
    if config.training.scheduler.type.lower() == "cosine":
        return "cosine"
    return _ConfigScheduler(config, steps_per_epoch)


def _warmup_fraction(config: Config) -> float:
    t = config.training
    return min(0.5, t.scheduler.warmup_epochs / t.epochs) if t.scheduler.warmup_epochs else 0.05


def _check_training(config: Config) -> None:
    t = config.training
    optimizers = ("adamw", "adam", "sgd", "rmsprop", "lion")
    if t.optimizer.type.lower() not in optimizers:
        raise ValueError(f"training.optimizer.type: unknown optimizer {t.optimizer.type!r}; expected one of {', '.join(optimizers)}")
    schedulers = ("cosine", "linear", "step", "constant", "plateau")
    if t.scheduler.type.lower() not in schedulers:
        raise ValueError(f"training.scheduler.type: unknown scheduler {t.scheduler.type!r}; expected one of {', '.join(schedulers)}")
    if not t.learning_rate > 0:
        raise ValueError(f"training.learning_rate must be > 0, got {t.learning_rate}")
    if t.epochs < 1:
        raise ValueError(f"training.epochs must be >= 1, got {t.epochs}")
    if t.batch_size < 1:
        raise ValueError(f"training.batch_size must be >= 1, got {t.batch_size}")
