import pytest
import torch

from jepa.config import Config, ConfigError, config_from_dict, load_config, save_config, shipped_configs


def test_default_config_ships_and_round_trips(tmp_path):
    assert "default" in shipped_configs()
    cfg = load_config("default")
    assert isinstance(cfg, Config)
    path = save_config(cfg, tmp_path / "c.yaml")
    assert load_config(path) == cfg


def test_yaml_float_without_dot_becomes_float(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("training:\n  learning_rate: 1e-4\n  weight_decay: 1e-2\n  optimizer:\n    eps: 1e-8\n")
    cfg = load_config(path)
    assert cfg.training.learning_rate == 1e-4 and isinstance(cfg.training.learning_rate, float)
    assert cfg.training.optimizer.eps == 1e-8


def test_unknown_key_suggests_closest():
    with pytest.raises(ConfigError, match=r"unknown config key 'training.learning_rat'.*did you mean 'training.learning_rate'"):
        config_from_dict({"training": {"learning_rat": 0.1}})


def test_wrong_type_names_path_value_and_type():
    with pytest.raises(ConfigError, match=r"training.epochs: got 'ten' \(str\), expected an int"):
        config_from_dict({"training": {"epochs": "ten"}})


def test_not_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("training: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(FileNotFoundError, match="jepa config --output"):
        load_config(tmp_path / "nope.yaml")


def test_shipped_default_yaml_matches_dataclass_defaults():
    # the YAML users get from `jepa config` and the defaults in code must not drift apart
    assert load_config("default") == Config()


@pytest.mark.parametrize("name", ["ijepa", "quick", "lejepa", "ijepa_sigreg"])
def test_every_shipped_config_loads_and_trains_one_epoch(name, tmp_path):
    from jepa.trainer import JEPATrainer

    cfg = load_config(name)
    cfg.training.epochs = 1
    cfg.logging.output_dir = str(tmp_path)
    cfg.logging.progress_bar = False
    history = JEPATrainer(cfg).train()
    assert len(history["train_loss"]) == 1
    assert 0.3 < history["val_accuracy"][0] <= 1.0  # the digits have labels: the online probe ran (chance: 0.1)


def test_shipped_recipes_are_config_choices():
    """The recipes differ only in model/loss keys (so they apply to any data): target encoder and regularizer."""
    from jepa.trainer.builders import build_loss, model_from_config, recipe_name
    from jepa.trainer.losses import SIGRegLoss

    assert set(shipped_configs()) >= {"default", "ijepa", "quick", "lejepa", "ijepa_sigreg"}
    assert recipe_name(load_config("lejepa")) == "LeJEPA-style" and recipe_name(load_config("ijepa_sigreg")) == "I-JEPA + SIGReg"
    for name in ("lejepa", "ijepa_sigreg"):
        cfg = load_config(name)
        assert cfg.data == Config().data and cfg.training == Config().training  # only the recipe differs
        loss = build_loss(cfg)
        assert isinstance(loss.sigreg, SIGRegLoss) and loss.sigreg.num_slices == cfg.loss.sigreg.num_slices
        assert loss.regularizer_weight == cfg.loss.regularizer_weight
        model = model_from_config(cfg, input_dim=4, num_tokens=16)
        assert (model.target_encoder is None) == (name == "lejepa") and loss.stop_gradient == (name != "lejepa")
    cfg = Config()
    for target, reg, expected in [("ema", "none", "I-JEPA (EMA)"), ("ema", "vc", "I-JEPA + VC"), ("shared", "vc", "shared target + VC"),
                                  ("none", "none", "online target, no regularizer")]:
        cfg.model.target_encoder, cfg.loss.regularizer = target, reg
        assert recipe_name(cfg) == expected


def test_model_pool_reaches_the_model_and_bad_values_are_named(tmp_path):
    from jepa.trainer import JEPATrainer

    cfg = config_from_dict({"model": {"pool": "flatten", "hidden_dim": 16, "encoder_layers": 1},
                            "logging": {"output_dir": str(tmp_path), "loggers": [], "progress_bar": False}})
    trainer = JEPATrainer(cfg)
    assert trainer.model.pool == "flatten" and trainer.model.embed(torch.zeros(2, 16, 4)).shape == (2, 16 * 16)
    cfg.model.pool = "max"
    with pytest.raises(ValueError, match=r"model.pool.*'max'"):
        JEPATrainer(cfg)
