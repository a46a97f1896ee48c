"""strategy / activation_checkpointing in one process: bad input gives one clear error, the FSDP plan
(which modules become units), and activation checkpointing that changes memory, not numbers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from jepa.config import Config
from jepa.models import IJEPA, JEPA, JEPAAction, MaskedPredictor, VisionTransformer
from jepa.models.encoder import Encoder
from jepa.models.predictor import Predictor, Projector
from jepa.trainer import JEPATrainer, create_trainer, fsdp
from jepa.trainer.activation_checkpointing import apply_activation_checkpointing
from jepa.trainer.builders import check_training
from jepa.trainer.distributed import DistributedContext
from jepa.trainer.fsdp import ShardedDataParallel, check_fsdp_support, fsdp_units
from jepa.trainer.losses import JEPALoss
from jepa.trainer.objective import loss_terms, model_outputs


def _jepa(dropout: float = 0.0, layers: int = 2) -> JEPA:
    torch.manual_seed(0)
    return JEPA(encoder=Encoder(hidden_dim=16, num_layers=layers, num_heads=2, dropout=dropout), predictor=Predictor(hidden_dim=16),
                projector=Projector(16, 8, 8))


def test_fsdp_without_distributed_is_refused_with_one_clear_error(tmp_path):
    with pytest.raises(ValueError, match=r"strategy='fsdp' shards the model .* pass distributed=True"):
        create_trainer(_jepa(), device="cpu", save_dir=tmp_path, strategy="fsdp")
    model = _jepa()
    with pytest.raises(ValueError, match=r"strategy='fsdp' shards the model"):
        JEPATrainer(model, torch.optim.AdamW(model.parameters()), device="cpu", save_dir=tmp_path, strategy="fsdp")


def test_unknown_strategy_is_refused_naming_the_choices(tmp_path):
    model = _jepa()
    with pytest.raises(ValueError, match=r"strategy must be one of 'ddp', 'fsdp', got 'zero3'"):
        JEPATrainer(model, torch.optim.AdamW(model.parameters()), device="cpu", save_dir=tmp_path, strategy="zero3")
    with pytest.raises(TypeError, match="activation_checkpointing must be a bool"):
        JEPATrainer(model, torch.optim.AdamW(model.parameters()), device="cpu", save_dir=tmp_path, activation_checkpointing="yes")
    config = Config()
    config.training.strategy = "zero3"
    with pytest.raises(ValueError, match=r"training.strategy must be one of 'ddp', 'fsdp', got 'zero3'"):
        check_training(config)


def test_cli_strategy_flag(capsys):
    from jepa.cli.main import build_parser, main

    assert build_parser().parse_args(["train", "--strategy", "fsdp", "--distributed", "true"]).strategy == "fsdp"
    assert main(["train", "--strategy", "fsdp"]) == 2  # without --distributed: one line, exit 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--strategy fsdp" in err and "--distributed true" in err
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--strategy", "zero3"])


def test_old_torch_is_told_which_version_fsdp_needs(monkeypatch):
    monkeypatch.setattr(fsdp, "_torch_version", lambda: (2, 5))
    with pytest.raises(RuntimeError, match=r"strategy='fsdp' needs torch >= 2\.6 .*this is torch"):
        check_fsdp_support()


def test_an_optimizer_with_state_is_refused_before_sharding():
    model = _jepa()
    opt = torch.optim.AdamW(model.parameters())
    model.encoder.pos_embed.grad = torch.zeros_like(model.encoder.pos_embed)
    opt.step()
    ctx = DistributedContext(rank=0, local_rank=0, world_size=2, device=torch.device("cpu"), backend="gloo", owns_group=False)
    with pytest.raises(ValueError, match="optimizer already holds state"):
        ShardedDataParallel(model, ctx, opt)
    stranger = torch.optim.AdamW([nn.Parameter(torch.zeros(3))])
    with pytest.raises(ValueError, match="not a parameter of the model"):
        ShardedDataParallel(_jepa(), ctx, stranger)


def test_fsdp_units_cover_blocks_components_and_the_ema_target():
    assert [n for n, _ in fsdp_units(_jepa())] == [
        "encoder.blocks.0", "encoder.blocks.1", "encoder", "predictor", "projector",
        "target_encoder.blocks.0", "target_encoder.blocks.1", "target_encoder", "",
    ]
    vit = IJEPA(VisionTransformer(image_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2),
                MaskedPredictor(grid_size=4, embed_dim=32, predictor_embed_dim=16, depth=1, num_heads=2))
    assert [n for n, _ in fsdp_units(vit)] == [
        "encoder.blocks.0", "encoder.blocks.1", "encoder", "predictor.blocks.0", "predictor",
        "target_encoder.blocks.0", "target_encoder.blocks.1", "target_encoder", "",
    ]
    action = JEPAAction(Encoder(hidden_dim=16, num_layers=1, num_heads=2), nn.Linear(3, 16), Predictor(hidden_dim=16))
    names = [n for n, _ in fsdp_units(action)]
    assert names == ["jepa.encoder.blocks.0", "jepa.encoder", "jepa.predictor", "action_encoder", "jepa.target_encoder.blocks.0",
                     "jepa.target_encoder", ""]
    # every parameter of every model is inside a unit below the root: the root keeps none
    for model in (_jepa(), vit, action):
        below = {id(p) for _, u in fsdp_units(model)[:-1] for p in u.parameters()}
        assert below == {id(p) for p in model.parameters()}


def _step_grads(model: JEPA, x: torch.Tensor, y: torch.Tensor) -> tuple[dict[str, torch.Tensor], int]:
    """Gradients of one loss evaluation, and how many tensors autograd kept for backward."""
    saved = []

    def pack(t):
        saved.append(t.numel())
        return t

    torch.manual_seed(5)  # the same dropout masks for both models
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = loss_terms(JEPALoss(var_weight=1.0, cov_weight=0.5), model_outputs(model, (x, y)))["loss"]
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, sum(saved)


def test_activation_checkpointing_keeps_gradients_and_saves_less():
    x = torch.randn(4, 6, 16, generator=torch.Generator().manual_seed(1))
    y = x.roll(1, dims=1)
    plain = _jepa(dropout=0.1)
    grads_plain, kept_plain = _step_grads(plain, x, y)
    checkpointed = _jepa(dropout=0.1)
    assert apply_activation_checkpointing(checkpointed) == 2  # the online encoder's blocks; not the EMA target's
    assert apply_activation_checkpointing(checkpointed) == 2  # applying twice changes nothing
    assert not any(hasattr(b, "_jepa_activation_checkpointing") for b in checkpointed.target_encoder.blocks)
    grads_ckpt, kept_ckpt = _step_grads(checkpointed, x, y)
    assert grads_plain.keys() == grads_ckpt.keys()
    for name in grads_plain:  # dropout masks replayed in the recomputation: the same gradients
        torch.testing.assert_close(grads_ckpt[name], grads_plain[name], rtol=0, atol=1e-6, msg=name)
    assert kept_ckpt < 0.75 * kept_plain  # the blocks' activations were not kept


def test_activation_checkpointing_through_the_trainer(tmp_path):
    x = torch.randn(8, 6, 16, generator=torch.Generator().manual_seed(2))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, x.roll(1, dims=1)), batch_size=4)
    runs = []
    for flag in (False, True):
        trainer = create_trainer(_jepa(), device="cpu", save_dir=tmp_path / str(flag), progress_bar=False, save_best=False,
                                 save_last=False, activation_checkpointing=flag)
        trainer.train(loader, num_epochs=1)
        runs.append(trainer.model.state_dict())
    for key in runs[0]:
        torch.testing.assert_close(runs[1][key], runs[0][key], rtol=0, atol=1e-6, msg=key)
