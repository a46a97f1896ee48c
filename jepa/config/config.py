"""Typed configuration: dataclasses loaded from and saved to YAML.

``load_config(path_or_name)`` reads a YAML file (or a shipped config by name, e.g. ``"default"``)
into a :class:`~jepa.config.Config`. Unknown keys are refused with the closest valid key suggested; values are
checked against the field types (``1e-4`` written without a dot, which YAML reads as a string,
becomes a float).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from jepa.config.world_model import PlanningConfig, WorldModelConfig  # noqa: F401  (PlanningConfig: re-exported)

CONFIG_DIR = Path(__file__).parent / "defaults"


class ConfigError(ValueError):
    """A configuration file or value is invalid; the message names the key path."""


@dataclass
class VitConfig:
    """``model.vit``: sizes that replace those of the ``model.arch`` preset (null: the preset's, or
    I-JEPA's predictor defaults: width ``min(384, embed_dim)``, the encoder's heads, depth 6/12)."""

    embed_dim: int | None = None
    depth: int | None = None
    num_heads: int | None = None
    predictor_embed_dim: int | None = None
    predictor_depth: int | None = None
    predictor_num_heads: int | None = None


@dataclass
class ModelConfig:
    """Architecture of the encoder, predictor and target encoder.

    ``arch`` null: the token JEPA below (``hidden_dim``, ``encoder_layers``, ...) on the digits
    tokens. ``arch`` ``vit_tiny`` ... ``vit_huge`` or ``auto``: I-JEPA on images
    (:class:`~jepa.models.IJEPA`, a ViT of that preset with ``patch_size`` and the ``vit`` overrides;
    ``auto`` sizes it for the image size and the device). An image dataset with ``arch`` null means
    ``auto``.
    """

    hidden_dim: int = 64
    input_dim: int | None = None  # None: taken from the data
    encoder_layers: int = 2
    num_heads: int = 4
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    predictor: str = "mlp"  # "mlp" | "transformer"
    predictor_layers: int = 2
    predictor_dim: int | None = None
    target_encoder: str = "ema"  # "ema" | "shared" (stop-gradient) | "none" (LeJEPA-style: online encoder, gradients)
    ema_momentum: float = 0.996
    ema_momentum_end: float = 1.0
    projector_hidden_dim: int = 256  # VICReg-style expander the regularizer acts on; 0 disables it
    projector_dim: int = 256
    pool: str = "flatten"  # the embedding probes read: "mean" over tokens | "flatten" (the token grid, T*D wide)
    arch: str | None = None  # None: token JEPA | "auto" | "vit_tiny" | "vit_small" | "vit_base" | "vit_large" | "vit_huge"
    patch_size: int | None = None  # ViT patch side in pixels (None: chosen for the image size)
    vit: VitConfig = field(default_factory=VitConfig)
    init_from: str | None = None  # continue pretraining: encoder weights from a checkpoint or saved directory (jepa.trainer.init_from)


@dataclass
class SIGRegConfig:
    """``loss.sigreg``: LeJEPA's SIGReg (used with ``loss.regularizer: sigreg``): ``num_slices``
    random directions per step, the characteristic function on ``knots`` points of ``[0, t_max]``;
    the directions are seeded by ``training.seed``."""

    num_slices: int = 1024
    t_max: float = 3.0
    knots: int = 17


@dataclass
class LossConfig:
    """The JEPA objective: prediction distance + anti-collapse regularizer (``regularizer``: ``vc``
    weighs ``var_weight``/``cov_weight``, ``sigreg`` uses ``sigreg``; ``regularizer_weight`` scales either)."""

    type: str = "smooth_l1"  # "smooth_l1" | "mse" | "l1"
    normalize_target: bool = True
    target_norm: str = "batch"  # "layer" (I-JEPA) | "batch" | "none"
    token_weight: float = 0.0  # per-token prediction term
    global_weight: float = 1.0  # token-pooled prediction term
    var_weight: float = 1.0
    var_gamma: float = 1.0
    cov_weight: float = 1.0
    regularize: str = "pooled"  # "pooled" | "tokens" | "prediction"
    regularizer: str = "vc"  # "vc" (variance/covariance) | "sigreg" (LeJEPA) | "none"
    regularizer_weight: float = 1.0
    sigreg: SIGRegConfig = field(default_factory=SIGRegConfig)


@dataclass
class OptimizerConfig:
    """``training.optimizer``: the optimizer's name (adamw, adam, sgd, rmsprop, lion) and its betas and eps."""

    type: str = "adamw"
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8


@dataclass
class SchedulerConfig:
    """``training.scheduler``: the learning-rate schedule (cosine, linear, step, constant, plateau) after
    ``warmup_epochs`` of linear warmup (0: 5% of the steps; from ``start_lr``, null: from zero), down
    to ``min_lr``."""

    type: str = "cosine"
    warmup_epochs: float = 0.0
    min_lr: float = 1e-5
    start_lr: float | None = None  # cosine: the warmup's first learning rate (I-JEPA: 2e-4 up to 1e-3)


@dataclass
class ValidationConfig:
    """``training.validation``: validate every ``frequency`` epochs; stop early after ``patience``
    validations without improvement (None: never). ``probe``: an online probe (``val_accuracy``,
    ``val_knn_accuracy``) when the validation data has labels. ``monitor``: what ``best_model.pt``
    and early stopping follow: ``auto`` (``val_accuracy`` when the probe runs, else ``val_loss``),
    ``val_loss``, ``val_accuracy`` or ``val_knn_accuracy``."""

    frequency: int = 1
    patience: int | None = None
    probe: bool = True
    monitor: str = "auto"


@dataclass
class TrainingConfig:
    """Optimisation settings (the ``training:`` block of the YAML)."""

    epochs: int = 100
    batch_size: int = 64
    learning_rate: float = 2e-3
    weight_decay: float = 0.05
    weight_decay_end: float | None = None  # cosine schedule of the weight decay up to this value (I-JEPA: 0.04 -> 0.4)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    mixed_precision: bool = False
    gradient_clip: float | None = None
    gradient_accumulation: int = 1
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    device: str = "auto"
    seed: int = 0
    strategy: str = "ddp"  # ddp | fsdp (with distributed training: replicated or sharded model)
    activation_checkpointing: bool = False  # recompute each transformer block's activations in backward


@dataclass
class MaskConfig:
    """``data.masks``: I-JEPA's multi-block masks (:class:`~jepa.data.MultiBlockMaskCollator`) for
    image runs: ``num_targets`` target blocks of ``target_scale`` of the patch grid each (aspect
    ratio in ``target_aspect``), one context block of ``context_scale`` minus the targets, at least
    ``min_keep`` context patches per image (null: 10, or fewer on grids too small for that)."""

    num_targets: int = 4
    target_scale: list[float] = field(default_factory=lambda: [0.15, 0.2])
    target_aspect: list[float] = field(default_factory=lambda: [0.75, 1.5])
    context_scale: list[float] = field(default_factory=lambda: [0.85, 1.0])
    min_keep: int | None = None


@dataclass
class DataConfig:
    """Where the training data come from: ``digits`` (embedded; (state_t, state_t1) pairs, or 8x8
    images when ``model.arch`` is set) or ``image_folder`` (``path``: a folder of images, see
    :class:`~jepa.data.ImageFolderDataset`). The keys after ``split_seed`` apply to image runs."""

    dataset: str = "digits"
    patch_size: int = 2
    max_shift: int = 1
    noise: float = 0.05
    context_mask_ratio: float = 0.25
    mask_mode: str = "random"  # "random" | "block"
    max_rotation: float = 8.0
    max_scale: float = 0.0
    clean_target: bool = True
    num_workers: int | None = 0  # DataLoader workers; None: chosen for the machine (image runs)
    split_seed: int = 0
    path: str | None = None  # image_folder: the folder (ImageNet layout, class folders, or flat)
    image_size: int | None = None  # None: from the images (median shorter side, at most 224)
    val_fraction: float = 0.2  # a folder without val/: seeded stratified split (split_seed)
    crop_scale: list[float] = field(default_factory=lambda: [0.3, 1.0])  # random resized crop (I-JEPA)
    flip: bool = False  # random horizontal flip (I-JEPA: off)
    color_jitter: float = 0.0  # colour jitter strength (I-JEPA: off)
    normalize: str = "dataset"  # "dataset" (train statistics) | "imagenet" | "none": the model standardises its input
    on_error: str = "raise"  # an unreadable image file: "raise" (an error naming it) | "skip" (checked up front, left out, counted)
    masks: MaskConfig = field(default_factory=MaskConfig)


@dataclass
class LoggingConfig:
    """Where runs go and which logger backends receive metrics."""

    output_dir: str = "runs/default"
    log_every_n_steps: int = 10
    progress_bar: bool = True
    loggers: list[str] = field(default_factory=lambda: ["csv"])  # console | csv | tensorboard | wandb
    experiment_name: str = "jepa"
    wandb_project: str | None = None
    wandb_mode: str = "offline"  # offline | online | disabled
    collapse_check_every_n_steps: int = 200  # effective rank of a held-out batch; 0 disables


@dataclass
class Config:
    """Root configuration."""

    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    data: DataConfig = field(default_factory=DataConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    task_weights: dict[str, float] = field(default_factory=dict)  # MultiTaskTrainer: loss weight per task
    task: str = "jepa"  # "jepa" (representations of the data) | "world_model" (trajectories, planning; see world_model)
    world_model: WorldModelConfig = field(default_factory=WorldModelConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------- parsing
def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _coerce(value: Any, tp: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, path)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{path}: got {value!r}, expected {' or '.join(_type_name(a) for a in args)}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: got {value!r}, expected a mapping of {tp.__name__} fields")
        return _build(tp, value, path)
    if origin is dict:
        _, val_tp = typing.get_args(tp) or (str, Any)
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: got {value!r}, expected a mapping")
        return {str(k): _coerce(v, val_tp, f"{path}.{k}") for k, v in value.items()}
    if origin is list:
        (item,) = typing.get_args(tp) or (Any,)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: got {value!r}, expected a list")
        return [_coerce(v, item, f"{path}[{i}]") for i, v in enumerate(value)]
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{path}: got {value!r}, expected true or false")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{path}: got {value!r} ({type(value).__name__}), expected an int")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # YAML 1.1 reads 1e-4 (no dot) as a string
            except ValueError:
                pass
        raise ConfigError(f"{path}: got {value!r} ({type(value).__name__}), expected a float")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{path}: got {value!r} ({type(value).__name__}), expected a string")
    raise ConfigError(f"{path}: unsupported field type {tp!r}")


def _build(cls: type, data: dict[str, Any], path: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        where = f"{path}.{key}" if path else str(key)
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1, cutoff=0.5)
            hint = f"; did you mean {(f'{path}.' if path else '') + close[0]!r}?" if close else f"; valid keys: {', '.join(names)}"
            raise ConfigError(f"unknown config key {where!r}{hint}")
        kwargs[key] = _coerce(value, hints[key], where)
    return cls(**kwargs)


def config_from_dict(data: dict[str, Any] | None) -> Config:
    """Build a :class:`~jepa.config.Config` from a nested dict (missing keys keep their defaults)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"a config must be a mapping at the top level, got {type(data).__name__}")
    return _build(Config, data, "")


def shipped_configs() -> list[str]:
    """Names of the configs shipped with the package (``load_config(name)``)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def load_config(path_or_name: str | os.PathLike = "default") -> Config:
    """Load a YAML file, or a shipped config by name (``"default"``)."""
    path = Path(path_or_name)
    if not path.is_file():
        shipped = CONFIG_DIR / f"{path_or_name}.yaml"
        if isinstance(path_or_name, str) and shipped.is_file():
            path = shipped
        else:
            raise FileNotFoundError(
                f"config {str(path_or_name)!r} is neither a file nor a shipped config ({', '.join(shipped_configs())}); "
                "write the default with `jepa config --output PATH`"
            )
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{str(path)!r} is not valid YAML: {exc}") from exc
    try:
        return config_from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def save_config(config: Config, path: str | os.PathLike) -> Path:
    """Write ``config`` as YAML to ``path`` (parent folders are created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    return path
