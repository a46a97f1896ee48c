"""``model.init_from`` / ``jepa train --init-from``: a run's encoder and EMA target start from saved
weights (trainer checkpoint, save_pretrained folder, Hugging Face IJepaModel folder); a wrong path
or a mismatched architecture is one clear error."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

import jepa.io as jio
import jepa.trainer.experiment as experiment
from jepa.cli.main import main
from jepa.config import load_config
from jepa.data import write_shapes_folder
from jepa.hub import vit_from_ijepa_state_dict
from jepa.models import IJEPA, MaskedPredictor, VisionTransformer
from jepa.trainer import JEPATrainer
from jepa.trainer.checkpoints import model_from_checkpoint_state
from jepa.trainer.init_from import init_encoder_from

COMMON = ["--image-size", "16", "--patch-size", "4", "--batch-size", "8", "--no-progress"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 1-epoch image run, its config, and the trained model (from last.pt) saved three ways."""
    root = tmp_path_factory.mktemp("init_from")
    shapes = write_shapes_folder(root / "shapes", num_train=24, num_val=8, image_size=16, num_classes=3)
    assert main(["train", "--data", str(shapes), "--epochs", "1", "--output-dir", str(root / "run"), *COMMON]) == 0
    last = root / "run" / "checkpoints" / "last.pt"
    model = model_from_checkpoint_state(jio.load(last), source=str(last))
    model.encoder.save_pretrained(root / "vit")
    model.save_pretrained(root / "ijepa")
    return {"root": root, "shapes": shapes, "last": last, "model": model, "config": root / "run" / "config.yaml"}


def _assert_same_encoder(model, source_encoder):
    want = source_encoder.state_dict()
    for enc in (model.encoder, model.target_encoder):
        got = enc.state_dict()
        assert got.keys() == want.keys()
        for k in want:
            assert torch.equal(got[k].cpu(), want[k].cpu()), k


def _differs(a, b):
    return any(not torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_cli_init_from_a_save_pretrained_folder_starts_from_its_encoder(trained, tmp_path, monkeypatch):
    seen = {}
    real = experiment.build_probe_run

    def capture(config, **kw):  # the model as the CLI hands it to training, before any step
        trainer, random_init = real(config, **kw)
        seen["state"] = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
        seen["model"] = trainer.model
        seen["random"] = random_init
        return trainer, random_init

    monkeypatch.setattr(experiment, "build_probe_run", capture)
    out = tmp_path / "cont"
    code = main(["train", "--data", str(trained["shapes"]), "--epochs", "1", "--init-from", str(trained["root"] / "vit"),
                 "--output-dir", str(out), *COMMON])
    assert code == 0
    start = seen["state"]
    want = trained["model"].encoder.state_dict()
    for prefix in ("encoder.", "target_encoder."):
        for k, v in want.items():
            assert torch.equal(start[prefix + k].cpu(), v), prefix + k
    assert _differs(seen["random"].encoder, trained["model"].encoder)  # the probe's baseline stays random
    assert load_config(out / "config.yaml").model.init_from == str(trained["root"] / "vit")
    after = model_from_checkpoint_state(jio.load(out / "checkpoints" / "last.pt"))
    assert _differs(after.encoder, trained["model"].encoder)  # and training went on from there


@pytest.mark.parametrize("source", ["last", "ijepa"])
def test_config_key_loads_a_checkpoint_or_a_saved_ijepa(trained, source):
    config = load_config(trained["config"])
    config.model.init_from = str(trained["last"] if source == "last" else trained["root"] / "ijepa")
    trainer = JEPATrainer(config)
    try:
        _assert_same_encoder(trainer.model, trained["model"].encoder)
        assert _differs(trainer.model.predictor, trained["model"].predictor)  # only the encoder is taken
    finally:
        trainer.close()


def test_hugging_face_ijepa_folder(trained, tmp_path):
    pytest.importorskip("transformers")
    from jepa.hub import to_transformers  # noqa: PLC0415

    to_transformers(trained["model"].encoder).save_pretrained(tmp_path / "hf")
    config = load_config(trained["config"])
    config.model.init_from = str(tmp_path / "hf")
    trainer = JEPATrainer(config)
    try:
        _assert_same_encoder(trainer.model, trained["model"].encoder)
    finally:
        trainer.close()


def _ijepa_reference():
    """tests/hub/ijepa_reference.py: the official I-JEPA layout and forward pass, independently restated."""
    spec = importlib.util.spec_from_file_location("ijepa_reference", Path(__file__).parents[1] / "hub" / "ijepa_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_official_ijepa_checkpoint_file(tmp_path):
    ref = _ijepa_reference()
    shapes = dict(dim=192, depth=1, patch=4, chans=3, side=2, hidden=384)  # 192 wide: I-JEPA's tiny, 3 heads
    enc = ref.encoder_state(1, **shapes)
    pred = ref.predictor_state(3, embed_dim=192, dim=48, depth=1, side=2, hidden=96)
    torch.save({"encoder": {f"module.{k}": v for k, v in enc.items()},
                "predictor": {f"module.{k}": v for k, v in pred.items()},
                "target_encoder": {f"module.{k}": v for k, v in ref.encoder_state(2, **shapes).items()}}, tmp_path / "in1k.pth.tar")
    # a run of the same architecture with other weights
    encoder = vit_from_ijepa_state_dict(ref.encoder_state(5, **shapes))
    model = IJEPA(encoder, MaskedPredictor(grid_size=2, embed_dim=192, predictor_embed_dim=48, depth=1, num_heads=2))
    init_encoder_from(model, tmp_path / "in1k.pth.tar")
    images = torch.randn(2, 3, 8, 8)
    want = ref.encoder_forward(enc, images, heads=3)  # the file's online encoder
    with torch.no_grad():
        for e in (model.encoder, model.target_encoder):
            assert ref.rel_err(e.eval()(images), want) < 1e-5


def _one_line_error(capsys, argv, *needles):
    assert main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("jepa: error: model.init_from"), err
    for needle in needles:
        assert needle in err[0], (needle, err[0])


def test_bad_path_and_mismatch_are_one_line_errors(trained, tmp_path, capsys):
    common = ["train", "--data", str(trained["shapes"]), "--epochs", "1", "--output-dir", str(tmp_path / "run"), "--no-progress",
              "--image-size", "16", "--batch-size", "8"]
    missing = tmp_path / "missing"
    _one_line_error(capsys, [*common, "--patch-size", "4", "--init-from", str(missing)], "no such file or directory", str(missing))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    _one_line_error(capsys, [*common, "--patch-size", "4", "--init-from", str(junk)], str(junk), "not a readable checkpoint")
    vit = str(trained["root"] / "vit")
    _one_line_error(capsys, [*common, "--patch-size", "8", "--init-from", vit], vit, "does not fit", "patch_embed.weight")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_mismatch_lists_every_key_and_leaves_the_model_untouched(trained):
    model = IJEPA(VisionTransformer(image_size=16, patch_size=4, embed_dim=48, depth=1, num_heads=2),
                  MaskedPredictor(grid_size=4, embed_dim=48, predictor_embed_dim=16, depth=1, num_heads=2))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"mismatched keys: .*unexpected blocks\.1\.") as info:
        init_encoder_from(model, trained["root"] / "vit")
    assert str(trained["root"] / "vit") in str(info.value) and "VisionTransformer" in str(info.value)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(TypeError, match="no encoder"):
        init_encoder_from(torch.nn.Linear(2, 2), trained["root"] / "vit")
