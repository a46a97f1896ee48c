"""World models through the shared trainer: the model step, the loss bound by output names, a
config-built run (validation, offline evaluation, checkpoints), exact resume, bf16 autocast, the
SIGReg / no-EMA choices, and bad world_model settings."""

import math

import numpy as np
import pytest
import torch

import jepa.io as jio
from jepa.config import Config
from jepa.models import ConvEncoder, WorldModel
from jepa.trainer import JEPATrainer
from jepa.trainer.callbacks import BaseCallback
from jepa.trainer.checkpoints import model_from_checkpoint_state
from jepa.trainer.losses import SIGRegLoss, variance_covariance
from jepa.trainer.objective import loss_inputs, loss_terms, model_outputs
from jepa.trainer.world_model_builders import world_model_data
from jepa.trainer.world_model_eval import WorldModelEvaluation, rollout_errors
from jepa.trainer.world_model_loss import WorldModelLoss, world_model_loss


def _windows(b=6, h=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, h + 1, 2, generator=g), torch.randn(b, h, 2, generator=g)


def test_forward_batch_takes_windows_and_transitions():
    torch.manual_seed(0)
    model = WorldModel.mlp(2, 2, latent_dim=4, hidden_dim=16)
    obs, act = _windows()
    out = model_outputs(model, [obs, act])
    ref = model.forward_trajectory(obs, act)
    assert out.keys() == ref.keys() == {"teacher_forcing", "rollout", "target", "context"}
    for k in ref:
        assert torch.equal(out[k], ref[k]), k
    assert torch.equal(model_outputs(model, {"observations": obs, "actions": act})["rollout"], ref["rollout"])
    pair = model_outputs(model, (obs[:, 0], act[:, 0], obs[:, 1]))
    assert torch.equal(pair["prediction"], ref["teacher_forcing"][:, 0])
    with pytest.raises(ValueError, match="forward_batch"):
        model.forward_batch([obs])
    with pytest.raises(ValueError, match="'observations' and 'actions'"):
        model.forward_batch({"obs": obs})


@pytest.mark.parametrize("regularizer", ["vc", "sigreg", "none"])
def test_loss_class_is_bound_by_output_names_and_equals_the_function(regularizer):
    torch.manual_seed(0)
    model = WorldModel.mlp(2, 2, latent_dim=4, hidden_dim=16)
    outputs = model_outputs(model, list(_windows()))
    loss = WorldModelLoss(regularizer=regularizer, regularizer_weight=0.5, cov_weight=0.04, smoothness_weight=0.3, sigreg_slices=32, seed=5)
    assert loss_inputs(loss, outputs) == {"teacher_forcing", "rollout", "target", "context"}
    terms = loss_terms(loss, outputs)
    reg = None
    if regularizer == "vc":
        def reg(z):
            var, cov = variance_covariance(z)
            return var + 0.04 * cov
    elif regularizer == "sigreg":
        reg = SIGRegLoss(num_slices=32, seed=5, distributed=False)
    expected = world_model_loss(outputs, regularizer=reg, regularizer_weight=0.5, smoothness_weight=0.3)
    assert terms.keys() == expected.keys()
    for k in expected:
        assert torch.allclose(terms[k], expected[k], rtol=1e-6, atol=0), k
    # and the pieces add up: tf + rollout (+ 0.5 reg) + 0.3 smooth, with smoothness the mean squared latent step
    c = outputs["context"]
    assert torch.allclose(terms["smoothness"], (c[:, 1:] - c[:, :-1]).pow(2).sum(-1).mean())
    total = terms["teacher_forcing"] + terms["rollout"] + 0.3 * terms["smoothness"] + (0.5 * terms["regularizer"] if regularizer != "none" else 0)
    assert torch.allclose(terms["loss"], total)
    if regularizer != "sigreg":  # (SIGReg draws new directions on every call)
        assert torch.equal(loss(**{k: outputs[k] for k in ("teacher_forcing", "rollout", "target", "context")}), terms["loss"])


def test_loss_refuses_bad_settings():
    with pytest.raises(ValueError, match="regularizer"):
        WorldModelLoss(regularizer="l2")
    with pytest.raises(ValueError, match="rollout_weight"):
        WorldModelLoss(rollout_weight=-1)
    with pytest.raises(ValueError, match="distance"):
        WorldModelLoss(distance="cosine")
    with pytest.raises(TypeError, match="regularizer"):
        WorldModelLoss(regularizer=3)


def tiny_config(out, **world_model) -> Config:
    """A world-model run of seconds: 24 episodes of 12 steps, a 4-d latent."""
    cfg = Config()
    cfg.task = "world_model"
    wm = cfg.world_model
    wm.episodes, wm.episode_steps, wm.horizon, wm.latent_dim, wm.hidden_dim = 24, 12, 3, 4, 32
    wm.eval_horizon, wm.eval_windows, wm.val_fraction = 5, 16, 0.25
    for key, value in world_model.items():
        setattr(wm, key, value)
    cfg.training.epochs, cfg.training.batch_size, cfg.training.weight_decay = 2, 32, 1e-4
    cfg.logging.output_dir, cfg.logging.progress_bar, cfg.logging.collapse_check_every_n_steps = str(out), False, 0
    return cfg


def test_episodes_are_split_whole_and_windows_stay_in_their_episode(tmp_path):
    data = world_model_data(tiny_config(tmp_path))
    assert data.train_arrays["observations"].shape[0] == 18 and data.val_arrays["observations"].shape[0] == 6
    train_rows = {tuple(r) for r in data.train_arrays["observations"].reshape(18, -1).round(6).tolist()}
    assert not any(tuple(r) in train_rows for r in data.val_arrays["observations"].reshape(6, -1).round(6).tolist())
    assert len(data.train) == 18 * (13 - 3) and len(data.val) == 6 * (13 - 3)


def test_config_run_trains_validates_evaluates_offline_and_checkpoints(tmp_path):
    cfg = tiny_config(tmp_path / "run")
    trainer = JEPATrainer(cfg)
    assert isinstance(trainer.model, WorldModel) and isinstance(trainer.loss_fn, WorldModelLoss)
    history = trainer.train()
    assert len(history["train_loss"]) == len(history["val_loss"]) == 2
    assert all(math.isfinite(v) for v in history["train_loss"] + history["val_loss"])
    (evaluation,) = [cb for cb in trainer.callbacks if isinstance(cb, WorldModelEvaluation)]
    assert [r[1] for r in evaluation.records] == [1, 2] and len(history["rollout_latent_mse"]) == 2
    assert len(evaluation.records[-1][2]["latent_mse"]) == 5 and "state_error" in evaluation.records[-1][2]
    # world-model runs keep checkpoints next to metrics.json; the checkpoint alone rebuilds the model
    state = jio.load(tmp_path / "run" / "last.pt")
    rebuilt = model_from_checkpoint_state(state)
    assert isinstance(rebuilt, WorldModel) and rebuilt.target_mode == "ema"
    for key, value in trainer.model.state_dict().items():
        assert torch.equal(rebuilt.state_dict()[key], value), key
    assert (tmp_path / "run" / "best_model.pt").is_file()


class _StopAfterFirstEpoch(BaseCallback):
    def on_epoch_end(self, trainer, model):
        trainer.should_stop = True


def test_a_resumed_world_model_run_is_bit_identical(tmp_path):
    full = JEPATrainer(tiny_config(tmp_path / "full"))
    full_history = full.train()
    # the same 2-epoch run stopped after epoch 1, then continued in a fresh trainer from its last.pt
    JEPATrainer(tiny_config(tmp_path / "split"), callbacks=[_StopAfterFirstEpoch()]).train()
    resumed = JEPATrainer(tiny_config(tmp_path / "split"), resume=str(tmp_path / "split" / "last.pt"))
    assert resumed.global_step == 0
    history = resumed.train()
    assert resumed.global_step == full.global_step > 0
    assert history == full_history  # losses, lr and the offline-evaluation curves, bit for bit
    for key, value in full.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[key], value), key


def test_bf16_autocast_and_gradient_accumulation_train_a_world_model(tmp_path):
    cfg = tiny_config(tmp_path / "amp")
    cfg.training.mixed_precision, cfg.training.gradient_accumulation = True, 2
    trainer = JEPATrainer(cfg)
    assert trainer.autocast_dtype == torch.bfloat16
    history = trainer.train()
    assert all(math.isfinite(v) for v in history["train_loss"])


def test_sigreg_without_ema_is_a_config_choice(tmp_path):
    cfg = tiny_config(tmp_path / "lewm", target_encoder="online", regularizer="sigreg", regularizer_weight=0.1, sigreg_slices=16)
    trainer = JEPATrainer(cfg)
    assert trainer.model.target_encoder is None and trainer.model.target_mode == "online"
    assert isinstance(trainer.loss_fn.regularizer_fn, SIGRegLoss) and trainer.loss_fn.regularizer_fn.num_slices == 16
    seen = []

    class Terms(BaseCallback):
        def on_batch_end(self, trainer, model, outputs, batch, batch_idx):
            seen.append(sorted(outputs))

    trainer.callbacks.append(Terms())
    history = trainer.train()
    assert all(math.isfinite(v) for v in history["train_loss"])
    assert seen[0] == ["loss", "regularizer", "rollout", "smoothness", "teacher_forcing"]
    # online target: the target latents carry gradient into the encoder
    outputs = model_outputs(trainer.model, list(_windows()))
    assert outputs["target"].requires_grad


@pytest.mark.parametrize("key, value, match", [
    ("regularizer", "l2", "world_model.regularizer"),
    ("target_encoder", "none", "world_model.target_encoder"),
    ("horizon", 0, "world_model.horizon"),
    ("val_fraction", 1.0, "world_model.val_fraction"),
    ("horizon", 20, "no training window"),
])
def test_bad_world_model_settings_are_refused_naming_the_key(tmp_path, key, value, match):
    with pytest.raises(ValueError, match=match):
        JEPATrainer(tiny_config(tmp_path, **{key: value}))


def test_bad_task_and_image_observations(tmp_path):
    cfg = tiny_config(tmp_path)
    cfg.task = "worldmodel"
    with pytest.raises(ValueError, match="task"):
        JEPATrainer(cfg)
    path = tmp_path / "images.npz"  # (C, H, W) images get a conv encoder; (H, W) without channels: no recipe
    np.savez(path, observations=np.zeros((3, 5, 8, 8), np.float32), actions=np.zeros((3, 4, 2), np.float32))
    with pytest.raises(NotImplementedError, match=r"vectors \(D,\) and images \(C, H, W\)"):
        JEPATrainer(tiny_config(tmp_path, data=str(path)))
    with pytest.raises(ValueError, match="world_model.env_options"):
        JEPATrainer(tiny_config(tmp_path, env_options={"colour": "red"}))
    with pytest.raises(ValueError, match="world_model.env_options"):
        JEPATrainer(tiny_config(tmp_path, env_options={"observation": "pixels"}))
    with pytest.raises(ValueError, match=r"world_model.conv_channels\[1\]"):
        JEPATrainer(tiny_config(tmp_path, conv_channels=[8, 0]))


def test_the_shipped_world_model_recipe_is_the_documented_one(tmp_path):
    from jepa.config import WorldModelConfig, load_config, save_config

    cfg = load_config("world_model")
    wm = cfg.world_model
    assert cfg.task == "world_model" and wm.data is None and wm.env == "two_rooms"
    assert (wm.episodes, wm.episode_steps, wm.action_repeat, wm.horizon, wm.latent_dim) == (1000, 50, 3, 4, 8)
    assert (wm.target_encoder, wm.regularizer, wm.cov_weight, wm.smoothness_weight) == ("ema", "vc", 0.04, 1.0)
    assert (cfg.training.epochs, cfg.training.batch_size, cfg.training.learning_rate) == (15, 256, 1e-3)
    assert wm.planning.planners == ["cem", "mppi"] and (wm.planning.samples, wm.planning.horizon, wm.planning.iterations) == (300, 10, 10)
    assert wm == WorldModelConfig()  # the YAML and the dataclass defaults do not drift apart
    assert load_config(save_config(cfg, tmp_path / "wm.yaml")) == cfg


def _action_error_ratio(model, evaluation):
    """Open-loop latent error with the recorded actions over the error with another window's actions
    (about 1 for a model that ignores its actions, small for one that learned what they do)."""
    true = sum(rollout_errors(model, evaluation.obs, evaluation.actions)["latent_mse"])
    other = torch.randperm(evaluation.actions.shape[0], generator=torch.Generator().manual_seed(0))
    return true / sum(rollout_errors(model, evaluation.obs, evaluation.actions[other])["latent_mse"])


@pytest.fixture
def one_thread():
    """Small convolutions run several times slower with two threads on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_image_observations_train_a_conv_world_model_that_learns_the_actions(tmp_path, one_thread):
    cfg = tiny_config(tmp_path / "img", env_options={"observation": "image", "image_size": 16}, conv_channels=[8, 16],
                      latent_dim=8, hidden_dim=64, episodes=48, episode_steps=12, horizon=2, eval_horizon=4, eval_windows=64)
    cfg.training.epochs = 30
    trainer = JEPATrainer(cfg)
    model = trainer.model
    assert isinstance(model.encoder, ConvEncoder) and model.encoder.image_size == (16, 16)
    assert trainer.train_loader.dataset.obs_shape == (1, 16, 16)
    (evaluation,) = [cb for cb in trainer.callbacks if isinstance(cb, WorldModelEvaluation)]
    assert evaluation.states is not None and evaluation.states.shape[-1] == 2  # positions recorded by collect
    before = _action_error_ratio(model, evaluation)
    trainer.train()
    after = _action_error_ratio(model, evaluation)
    assert before > 0.9 and after < 0.8, (before, after)
    assert len(evaluation.records[-1][2]["state_error"]) == 4  # the probe reads positions from image latents
    rebuilt = model_from_checkpoint_state(jio.load(tmp_path / "img" / "last.pt"))
    assert isinstance(rebuilt.encoder, ConvEncoder)
    for key, value in model.state_dict().items():
        assert torch.equal(rebuilt.state_dict()[key], value), key
