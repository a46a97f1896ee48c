import copy

import pytest
import torch
from torch import nn

from jepa.models import JEPA, BaseModel, Encoder, JEPAAction, Predictor, TransformerPredictor, build_model


def _jepa(dim=16, **kw):
    return JEPA(encoder=Encoder(hidden_dim=dim, num_layers=1, num_heads=2), predictor=Predictor(hidden_dim=dim), **kw)


def test_jepa_keeps_token_axis_on_btd_input():
    # The upstream library flattened (B, T, D) encoder output before an MLP built for D and crashed.
    model = _jepa(32)
    x, y = torch.randn(3, 7, 32), torch.randn(3, 7, 32)
    pred, target = model(x, y)
    assert pred.shape == (3, 7, 32) and target.shape == (3, 7, 32)
    assert not target.requires_grad and pred.requires_grad


def test_encoder_accepts_2d_input_and_input_projection():
    enc = Encoder(hidden_dim=16, input_dim=5, num_layers=1, num_heads=2)
    assert enc(torch.randn(4, 5)).shape == (4, 16)
    assert enc(torch.randn(4, 3, 5)).shape == (4, 3, 16)
    with pytest.raises(ValueError, match="feature size 6"):
        enc(torch.randn(4, 3, 6))
    with pytest.raises(TypeError, match="floating-point"):
        enc(torch.ones(4, 3, 5, dtype=torch.long))


def test_encoder_mask_replaces_tokens_with_mask_token():
    enc = Encoder(hidden_dim=8, num_layers=1, num_heads=2).eval()
    x = torch.randn(2, 4, 8)
    mask = torch.zeros(2, 4, dtype=torch.bool)
    mask[:, 1] = True
    x2 = x.clone()
    x2[:, 1] = 123.0  # a hidden token's content must not matter
    assert torch.allclose(enc(x, mask=mask), enc(x2, mask=mask))
    assert not torch.allclose(enc(x), enc(x2))


def test_bad_constructor_arguments_are_named():
    with pytest.raises(ValueError, match="num_heads"):
        Encoder(hidden_dim=10, num_heads=3)
    with pytest.raises(ValueError, match="hidden_dim"):
        Encoder(hidden_dim=0)
    with pytest.raises(ValueError, match="target_encoder"):
        _jepa(target_encoder="bogus")
    with pytest.raises(ValueError, match="momentum"):
        _jepa(momentum=1.5)


def test_save_pretrained_round_trip_is_bit_identical(tmp_path):
    model = _jepa(16)
    with torch.no_grad():
        for p in model.target_encoder.parameters():
            p.add_(0.01)  # the target must be saved separately from the online encoder
    model.save_pretrained(tmp_path / "m")
    assert (tmp_path / "m" / "config.json").is_file() and (tmp_path / "m" / "model.safetensors").is_file()
    rebuilt = JEPA.from_pretrained(tmp_path / "m")
    for (k, a), (k2, b) in zip(model.state_dict().items(), rebuilt.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k
    x, y = torch.randn(2, 3, 16), torch.randn(2, 3, 16)
    model.eval(), rebuilt.eval()
    assert all(torch.equal(a, b) for a, b in zip(model(x, y), rebuilt(x, y)))
    # model.safetensors is a real safetensors file: the safetensors package reads every weight,
    # and a file written by the safetensors package loads back through from_pretrained
    safetensors_torch = pytest.importorskip("safetensors.torch")
    theirs = safetensors_torch.load_file(str(tmp_path / "m" / "model.safetensors"))
    assert theirs.keys() == model.state_dict().keys()
    assert all(torch.equal(theirs[k], v) for k, v in model.state_dict().items())
    safetensors_torch.save_file({k: v.clone() for k, v in theirs.items()}, str(tmp_path / "m" / "model.safetensors"))
    again = JEPA.from_pretrained(tmp_path / "m")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


def test_from_pretrained_with_given_modules_and_torch_fallback(tmp_path):
    enc, pred = Encoder(hidden_dim=16, num_layers=1, num_heads=2), Predictor(hidden_dim=16)
    model = JEPA(encoder=enc, predictor=pred)
    model.save_pretrained(tmp_path / "pt", safe_serialization=False)
    assert (tmp_path / "pt" / "pytorch_model.bin").is_file()
    fresh_enc, fresh_pred = Encoder(hidden_dim=16, num_layers=1, num_heads=2), Predictor(hidden_dim=16)
    restored = JEPA.from_pretrained(tmp_path / "pt", encoder=fresh_enc, predictor=fresh_pred)
    assert restored.encoder is fresh_enc
    assert torch.equal(fresh_enc.blocks[0].attn.qkv.weight, enc.blocks[0].attn.qkv.weight)


def test_from_pretrained_refuses_other_architecture(tmp_path):
    _jepa(16).save_pretrained(tmp_path / "a")
    with pytest.raises(ValueError, match="shape mismatch"):
        JEPA.from_pretrained(tmp_path / "a", encoder=Encoder(hidden_dim=8, num_layers=1, num_heads=2), predictor=Predictor(hidden_dim=8))
    with pytest.raises(ValueError, match="holds a JEPA"):
        Encoder.from_pretrained(tmp_path / "a")
    with pytest.raises(FileNotFoundError):
        JEPA.from_pretrained(tmp_path / "missing")


def test_plain_module_needs_to_be_passed_back(tmp_path):
    model = JEPA(encoder=Encoder(hidden_dim=8, num_layers=1, num_heads=2), predictor=nn.Linear(8, 8))
    model.save_pretrained(tmp_path / "m")
    with pytest.raises(ValueError, match="predictor=..."):
        JEPA.from_pretrained(tmp_path / "m")
    restored = JEPA.from_pretrained(tmp_path / "m", predictor=nn.Linear(8, 8))
    assert torch.equal(restored.predictor.weight, model.predictor.weight)


def test_ema_update_matches_formula_and_cosine_schedule():
    model = _jepa(8, momentum=0.9, momentum_end=1.0)
    with torch.no_grad():
        for p in model.encoder.parameters():
            p.add_(torch.randn_like(p))
    before = [p.clone() for p in model.target_encoder.parameters()]
    online = [p.clone() for p in model.encoder.parameters()]
    model.set_total_steps(4)
    m = model.update_target_encoder()
    assert m == pytest.approx(0.9)
    for t, b, o in zip(model.target_encoder.parameters(), before, online):
        torch.testing.assert_close(t, 0.9 * b + 0.1 * o, rtol=1e-5, atol=1e-6)
    # cosine: halfway through, momentum is the midpoint; at the end it is momentum_end
    assert model.current_momentum() == pytest.approx(1.0 - 0.1 * (1 + torch.cos(torch.tensor(torch.pi / 4)).item()) / 2)
    model.ema_step.fill_(2)
    assert model.current_momentum() == pytest.approx(0.95)
    model.ema_step.fill_(4)
    assert model.current_momentum() == pytest.approx(1.0)
    assert not any(p.requires_grad for p in model.target_encoder.parameters())


def test_shared_target_is_stop_gradient_encoder():
    model = _jepa(8, target_encoder="shared").eval()
    assert model.target_encoder is None
    x = torch.randn(2, 3, 8)
    _, target = model(x, x)
    assert torch.equal(target, model.encoder(x)) and not target.requires_grad
    assert model.update_target_encoder() == 0.0


def test_transformer_predictor_shapes_and_mask():
    pred = TransformerPredictor(hidden_dim=16, predictor_dim=8, depth=1, num_heads=2)
    x = torch.randn(2, 5, 16)
    mask = torch.zeros(2, 5, dtype=torch.bool)
    mask[:, -1] = True
    assert pred(x).shape == (2, 5, 16) and pred(x, mask=mask).shape == (2, 5, 16)
    model = JEPA(encoder=Encoder(hidden_dim=16, num_layers=1, num_heads=2), predictor=pred)
    out = model.forward_features(x, x, context_mask=mask)
    assert out["prediction"].shape == (2, 5, 16)


def test_jepa_action_forward_and_rebuild(tmp_path):
    model = JEPAAction(
        state_encoder=Encoder(hidden_dim=16, num_layers=1, num_heads=2),
        action_encoder=Predictor(hidden_dim=3, output_dim=16),
        predictor=Predictor(hidden_dim=16),
    )
    s, a, s1 = torch.randn(4, 6, 16), torch.randn(4, 3), torch.randn(4, 6, 16)
    pred, target = model(s, a, s1)
    assert pred.shape == target.shape == (4, 6, 16)
    model.save_pretrained(tmp_path / "act")
    rebuilt = JEPAAction.from_pretrained(tmp_path / "act")
    model.eval(), rebuilt.eval()
    assert torch.equal(model(s, a, s1)[0], rebuilt(s, a, s1)[0])


def test_config_is_recorded_and_rebuilds():
    model = _jepa(8, momentum=0.99)
    assert model.config["momentum"] == 0.99
    assert model.config["encoder"]["__model__"] == "Encoder"
    clone = build_model("JEPA", copy.deepcopy(model.config))
    assert isinstance(clone, JEPA) and clone.momentum_start == 0.99
    assert isinstance(clone, BaseModel)


def test_projector_output_and_rebuild(tmp_path):
    from jepa.models import Projector

    model = JEPA(encoder=Encoder(hidden_dim=8, num_layers=1, num_heads=2), predictor=Predictor(hidden_dim=8), projector=Projector(8, 32, 16))
    out = model.forward_features(torch.randn(4, 3, 8), torch.randn(4, 3, 8))
    assert out["projection"].shape == (4, 16)
    assert model.projector in model.online_modules()
    model.save_pretrained(tmp_path / "p")
    rebuilt = JEPA.from_pretrained(tmp_path / "p")
    assert isinstance(rebuilt.projector, Projector)
    assert torch.equal(rebuilt.projector.net[0].weight, model.projector.net[0].weight)
    with pytest.raises(ValueError, match="hidden_dim"):
        Projector(8, 0, 4)


def _ema_model(n_layers=5, momentum=0.9):
    enc = nn.Sequential(*[nn.Linear(3, 3) for _ in range(n_layers)])
    model = JEPA(encoder=enc, predictor=nn.Identity(), momentum=momentum, momentum_end=momentum)
    with torch.no_grad():
        for p in model.encoder.parameters():
            p.add_(torch.randn_like(p))
    return model


def test_ema_uses_one_flat_buffer_and_stays_exact():
    model = _ema_model()
    online_objects = list(model.encoder.parameters())
    for step in range(3):
        before = [p.clone() for p in model.target_encoder.parameters()]
        online = [p.clone() for p in model.encoder.parameters()]
        model.update_target_encoder()
        for t, b, o in zip(model.target_encoder.parameters(), before, online):
            torch.testing.assert_close(t, 0.9 * b + 0.1 * o, rtol=1e-6, atol=1e-7)
        # the optimizer keeps working on the same Parameter objects, now views of one buffer
        with torch.no_grad():
            for p in model.encoder.parameters():
                p.mul_(1.5)
    assert all(a is b for a, b in zip(online_objects, model.encoder.parameters()))
    storages = {p.untyped_storage().data_ptr() for p in model.encoder.parameters()}
    assert len(storages) == 1
    assert {p.untyped_storage().data_ptr() for p in model.target_encoder.parameters()} != storages


def test_ema_layout_rebuilt_after_to_and_load_state_dict():
    model = _ema_model()
    model.update_target_encoder()
    model.to(torch.float64)
    before = [p.clone() for p in model.target_encoder.parameters()]
    online = [p.clone() for p in model.encoder.parameters()]
    model.update_target_encoder()
    for t, b, o in zip(model.target_encoder.parameters(), before, online):
        assert t.dtype == torch.float64
        torch.testing.assert_close(t, 0.9 * b + 0.1 * o)
    state = {k: v.clone() + 1 for k, v in model.state_dict().items()}
    model.load_state_dict(state, assign=True)
    before = [p.clone() for p in model.target_encoder.parameters()]
    online = [p.clone() for p in model.encoder.parameters()]
    model.update_target_encoder()
    for t, b, o in zip(model.target_encoder.parameters(), before, online):
        torch.testing.assert_close(t, 0.9 * b + 0.1 * o)


def test_replacing_param_data_behind_the_models_back_is_detected():
    model = _ema_model()
    model.update_target_encoder()
    first = next(model.encoder.parameters())
    first.data = first.data.clone()  # leaves the flat buffer
    with pytest.raises(RuntimeError, match="reset_ema_layout"):
        for _ in range(JEPA.EMA_LAYOUT_CHECK_EVERY + 1):
            model.update_target_encoder()
    model.reset_ema_layout()
    before = [p.clone() for p in model.target_encoder.parameters()]
    online = [p.clone() for p in model.encoder.parameters()]
    model.update_target_encoder()
    for t, b, o in zip(model.target_encoder.parameters(), before, online):
        torch.testing.assert_close(t, 0.9 * b + 0.1 * o)


def test_jepa_pool_flatten_embeds_the_token_grid_and_is_recorded():
    from jepa.models import JEPA, Encoder, Predictor

    torch.manual_seed(0)
    enc = Encoder(hidden_dim=8, input_dim=4, num_layers=1, num_heads=2, max_seq_len=16)
    x = torch.randn(3, 16, 4)
    flat = JEPA(enc, Predictor(hidden_dim=8), pool="flatten").eval()
    mean = JEPA(enc, Predictor(hidden_dim=8)).eval()
    with torch.no_grad():
        tokens = enc.eval()(x)
    assert torch.equal(flat.embed(x), tokens.reshape(3, 16 * 8))  # row i = sample i's tokens in order
    assert torch.allclose(mean.embed(x), tokens.mean(1)) and torch.equal(flat.embed(x, pooled=False), tokens)
    assert flat.config["pool"] == "flatten" and mean.config["pool"] == "mean"
    with pytest.raises(ValueError, match="pool must be one of"):
        JEPA(enc, Predictor(hidden_dim=8), pool="max")
