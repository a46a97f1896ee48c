"""One I-JEPA training step, images/s: ours vs a reference-style step, and data loading vs the step.

**Ours**: ``JEPATrainer`` epochs over pre-collated batches of :class:`jepa.models.IJEPA` (the context
encoder embeds only each image's context patches, padded per batch: ``keep=``; attention through
``jepa.ops.attention``; the loss :class:`jepa.trainer.losses.IJEPALoss` gathers the target tokens
inside ``jepa.ops.jepa_loss``; fused AdamW; one flat EMA update; the loss read back every
``log_every_n_steps`` steps only).

**Reference-style**: the step written here the way the I-JEPA repository (facebookresearch/ijepa,
``src/train.py``) does it, on the same architecture, weights and masks: every context mask
truncated to the batch's shortest one, the context encoder on all tokens of those truncated masks
(patch embedding of every patch, then the gather), plain attention (``softmax(q k^T) v`` written
out), the predictor on the context repeated once per target block, the target tokens layer-normed,
gathered and repeated, ``F.smooth_l1_loss``, the default (unfused) AdamW, a per-parameter EMA loop
and ``float(loss)`` every step (a host sync).

Rows: ViT-Ti at 64 px (patch 8: an 8x8 grid) on the CPU; ViT-B/16 at 224 px under bf16 autocast on
a GPU when one is there. Then data loading: images/s of the image run's training loader (PNG files
decoded, random resized crop, masks drawn in the workers; the default worker count) against the
training step's images/s, and a trainer epoch fed by that loader against the same epoch on batches
already in memory (how much the loader slows training).

Usage: python benchmarks/bench_ijepa_step.py [--out results.json] [--quick] [--threads N] [--no-cpu]
"""

from __future__ import annotations

import copy
import math
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import Report, apply_threads, cuda_sync, make_parser, measure  # noqa: E402

from jepa.data import MultiBlockMaskCollator, write_shapes_folder  # noqa: E402
from jepa.models import IJEPA  # noqa: E402
from jepa.models.vision import sincos_2d  # noqa: E402
from jepa.trainer import IJEPALoss, JEPATrainer  # noqa: E402
from jepa.trainer.optimizers import build_adamw  # noqa: E402


# ------------------------------------------------------------------------------- the reference-style step
class RefAttention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class RefBlock(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim, eps=1e-6), RefAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def apply_masks(x: torch.Tensor, masks: list[torch.Tensor]) -> torch.Tensor:
    """The reference's ``apply_masks``: the tokens of every mask, masks stacked along the batch."""
    return torch.cat([torch.gather(x, 1, m.unsqueeze(-1).expand(-1, -1, x.size(-1))) for m in masks], dim=0)


class RefViT(nn.Module):
    def __init__(self, ours) -> None:
        super().__init__()
        dim = ours.embed_dim
        self.patch_embed = nn.Conv2d(ours.in_chans, dim, ours.patch_size, stride=ours.patch_size)
        self.register_buffer("pos_embed", sincos_2d(dim, ours.grid_size)[None])
        self.blocks = nn.ModuleList(RefBlock(dim, ours.num_heads) for _ in ours.blocks)
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x: torch.Tensor, masks: list[torch.Tensor] | None = None) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2) + self.pos_embed
        if masks is not None:
            x = apply_masks(x, masks)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)


class RefPredictor(nn.Module):
    def __init__(self, ours) -> None:
        super().__init__()
        width, heads = ours.predictor_embed_dim, ours.blocks[0].attn.num_heads
        self.embed = nn.Linear(ours.embed_dim, width)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, width))
        self.register_buffer("pos_embed", sincos_2d(width, ours.grid_size)[None])
        self.blocks = nn.ModuleList(RefBlock(width, heads) for _ in ours.blocks)
        self.norm, self.proj = nn.LayerNorm(width, eps=1e-6), nn.Linear(width, ours.embed_dim)

    def forward(self, x: torch.Tensor, masks_x: list[torch.Tensor], masks: list[torch.Tensor]) -> torch.Tensor:
        b = len(x) // len(masks_x)
        x = self.embed(x) + apply_masks(self.pos_embed.repeat(b, 1, 1), masks_x)
        n_ctx = x.shape[1]
        pos = apply_masks(self.pos_embed.repeat(b, 1, 1), masks)
        pred = self.mask_token + pos
        x = torch.cat([x.repeat(len(masks), 1, 1), pred], dim=1)
        for blk in self.blocks:
            x = blk(x)
        return self.proj(self.norm(x)[:, n_ctx:])


def copy_weights(ref: nn.Module, ours: IJEPA) -> None:
    """The reference modules start from our model's weights (same math, same numbers)."""
    def blocks(dst, src):
        for d, s in zip(dst, src):
            d.norm1.load_state_dict(s.norm1.state_dict())
            d.norm2.load_state_dict(s.norm2.state_dict())
            d.attn.qkv.load_state_dict(s.attn.qkv.state_dict())
            d.attn.proj.load_state_dict(s.attn.proj.state_dict())
            d.mlp[0].load_state_dict(s.mlp[0].state_dict())
            d.mlp[2].load_state_dict(s.mlp[-2].state_dict())

    with torch.no_grad():
        for dst, src in ((ref.encoder, ours.encoder), (ref.target, ours.target_encoder)):
            dst.patch_embed.load_state_dict(src.patch_embed.state_dict())
            blocks(dst.blocks, src.blocks)
            dst.norm.load_state_dict(src.norm.state_dict())
        p, q = ref.predictor, ours.predictor
        p.embed.load_state_dict(q.input_proj.state_dict())
        p.mask_token.copy_(q.mask_token)
        blocks(p.blocks, q.blocks)
        p.norm.load_state_dict(q.norm.state_dict())
        p.proj.load_state_dict(q.proj.state_dict())


class Reference(nn.Module):
    def __init__(self, ours: IJEPA) -> None:
        super().__init__()
        self.encoder, self.predictor = RefViT(ours.encoder), RefPredictor(ours.predictor)
        self.target = copy.deepcopy(self.encoder).requires_grad_(False)
        copy_weights(self, ours)


def reference_batches(batches: list[dict]) -> list[tuple]:
    """The reference collator's masks: the context truncated to the batch's shortest, one tensor per target block."""
    out = []
    for b in batches:
        keep = int(b["context_valid"].sum(1).min())
        out.append((b["images"], [b["context_idx"][:, :keep]], list(b["target_idx"].unbind(1))))
    return out


def make_reference_epoch(ref: Reference, batches: list[tuple], device: torch.device, autocast: torch.dtype | None):
    opt = torch.optim.AdamW([p for m in (ref.encoder, ref.predictor) for p in m.parameters()], lr=1e-4, weight_decay=0.04)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    ctx = (lambda: torch.autocast(device.type, dtype=autocast)) if autocast else torch.enable_grad
    losses = []

    def epoch() -> None:
        for imgs, masks_enc, masks_pred in batches:
            with ctx():
                with torch.no_grad():
                    h = ref.target(imgs)
                    h = F.layer_norm(h, (h.size(-1),))
                    h = apply_masks(h, masks_pred).repeat(len(masks_enc), 1, 1)
                z = ref.predictor(ref.encoder(imgs, masks_enc), masks_enc, masks_pred)
                loss = F.smooth_l1_loss(z, h)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            with torch.no_grad():  # the per-parameter EMA loop
                m = 0.996
                for q, k in zip(ref.encoder.parameters(), ref.target.parameters()):
                    k.mul_(m).add_((1.0 - m) * q.detach().data)
            losses.append(float(loss.detach()))  # the reference's loss meter: a host sync every step

    return epoch


# ------------------------------------------------------------------------------- ours
def make_model(arch: str, image_size: int, patch: int, device: torch.device) -> IJEPA:
    torch.manual_seed(0)
    return IJEPA.from_preset(arch, image_size=image_size, patch_size=patch).to(device)


def make_batches(n: int, batch: int, image_size: int, grid: int, device: torch.device, seed: int = 0) -> list[dict]:
    col = MultiBlockMaskCollator(grid=(grid, grid))
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        b = {"images": torch.rand(batch, 3, image_size, image_size, generator=g), **col.sample(batch, g)._asdict()}
        out.append({k: v.to(device) for k, v in b.items()})
    return out


def make_trainer(model: IJEPA, device: torch.device, mixed: str | None) -> JEPATrainer:
    opt = build_adamw(model, learning_rate=1e-4, weight_decay=0.04, device=device)
    return JEPATrainer(model, opt, loss_fn=IJEPALoss(), device=device, progress_bar=False, save_best=False, save_last=False,
                       save_dir=tempfile.mkdtemp(prefix="jepa-bench-"), mixed_precision=mixed)


def step_rows(report: Report, args, name: str, arch: str, image_size: int, patch: int, batch: int, device: torch.device,
              mixed: str | None) -> float:
    """Add the ours/reference row of one setting; returns our images/s."""
    grid = image_size // patch
    n = 2 if args.quick else 4
    batches = make_batches(n, batch, image_size, grid, device)
    model = make_model(arch, image_size, patch, device)
    ref = Reference(model).to(device)
    with torch.no_grad():  # the reference really is the same network: equal target tokens
        x = batches[0]["images"][:2]
        assert torch.allclose(ref.target(x).float(), model.target_encoder(x).float(), atol=1e-4), "reference != ours"
    trainer = make_trainer(model, device, mixed)

    def ours() -> None:
        trainer.current_epoch = 0
        trainer.train(batches, num_epochs=1)

    sync = cuda_sync if device.type == "cuda" else None
    ref_epoch = make_reference_epoch(ref, reference_batches(batches), device, torch.bfloat16 if mixed == "bf16" else None)
    repeat = 2 if args.quick else max(3, args.repeat // 5)
    t_ours, t_ref = [], []
    ours(), ref_epoch()  # warm-up
    for _ in range(repeat):  # alternate, so drifting load hits both alike
        t_ours.append(measure(ours, warmup=0, repeat=1, sync=sync).median)
        t_ref.append(measure(ref_epoch, warmup=0, repeat=1, sync=sync).median)
    o, r = sorted(t_ours)[len(t_ours) // 2], sorted(t_ref)[len(t_ref) // 2]
    images = n * batch
    counts = [b["context_valid"].sum(1).float() for b in batches]
    kept = float(torch.cat(counts).mean())  # context patches per image: ours encodes them all (padded to the batch's most)
    truncated = sum(float(c.min()) for c in counts) / n  # the reference keeps the batch's fewest for every image
    report.add(f"{name}: {n} steps x {batch} images", o, r, reference_name="reference-style step",
               ours_images_per_s=images / o, reference_images_per_s=images / r, tokens=grid * grid,
               context_patches_ours=kept, context_patches_reference=truncated)
    print(f"{name}: ours {images / o:.1f} images/s, reference-style {images / r:.1f} images/s; context patches per image: "
          f"ours {kept:.1f} (all of them), reference {truncated:.1f} (truncated to the batch's fewest)", flush=True)
    report.note(f"{name}: the reference-style step encodes {truncated:.1f} context patches per image (every mask truncated to "
                f"the batch's shortest), ours all {kept:.1f}: ours does {kept / truncated:.2f}x its context work per image")
    return images / o


def loading_rows(report: Report, args, step_images_per_s: float) -> None:
    """The image run's training loader (default workers) vs the training step, on PNG files."""
    from jepa.config import config_from_dict  # noqa: PLC0415
    from jepa.trainer.images import default_num_workers, image_data, image_loaders, resolve_image_config  # noqa: PLC0415

    tmp = Path(tempfile.mkdtemp(prefix="jepa-bench-images-"))
    n_images = 96 if args.quick else 256
    folder = write_shapes_folder(tmp / "shapes", num_train=n_images, num_val=0, image_size=64, num_classes=4)
    batch = 16
    cfg = config_from_dict({
        "model": {"arch": "vit_tiny"}, "data": {"dataset": "image_folder", "path": str(folder), "image_size": 64,
                                               "num_workers": None, "val_fraction": 0.1},
        "training": {"batch_size": batch, "device": "cpu"}, "logging": {"progress_bar": False, "loggers": []},
    })
    cfg.model.patch_size = 8
    cfg = resolve_image_config(cfg, torch.device("cpu"))
    workers = cfg.data.num_workers
    loader, _ = image_loaders(cfg, image_data(cfg))
    n = len(loader) * batch
    t_load = measure(lambda: [None for _ in loader], warmup=1, repeat=2 if args.quick else 3)
    report.add(f"training loader alone, {workers} worker(s) (default), PNG 64 px, {n} images", t_load, n / step_images_per_s,
               reference_name="the training step on as many images", loader_images_per_s=n / t_load.median,
               step_images_per_s=step_images_per_s, workers=workers)
    print(f"loader: {n / t_load.median:.0f} images/s with {workers} worker(s) (default {default_num_workers()}); "
          f"training step: {step_images_per_s:.1f} images/s", flush=True)
    # a trainer epoch fed by the loader vs the same epoch on batches already in memory
    model = make_model("vit_tiny", 64, 8, torch.device("cpu"))
    trainer = make_trainer(model, torch.device("cpu"), None)
    in_memory = list(loader)

    def fed(source):
        def run():
            trainer.current_epoch = 0
            trainer.train(source, num_epochs=1)
        return run

    fed(in_memory)()  # warm-up
    t_fed, t_mem = [], []
    for _ in range(1 if args.quick else 2):
        t_fed.append(measure(fed(loader), warmup=0, repeat=1).median)
        t_mem.append(measure(fed(in_memory), warmup=0, repeat=1).median)
    report.add(f"trainer epoch fed by that loader ({n} images)", min(t_fed), min(t_mem), reference_name="batches in memory",
               images_per_s=n / min(t_fed), in_memory_images_per_s=n / min(t_mem))


def main() -> int:
    parser = make_parser("I-JEPA training step: ours vs a reference-style step; data loading vs the step")
    parser.add_argument("--no-cpu", action="store_true", help="skip the CPU rows (GPU machines)")
    args = parser.parse_args()
    apply_threads(args)
    report = Report("ijepa_step", args)
    step_ips = None
    if not args.no_cpu:
        step_ips = step_rows(report, args, "ViT-Ti/8 64px CPU fp32", "vit_tiny", 64, 8, 8 if args.quick else 16,
                             torch.device("cpu"), None)
    if torch.cuda.is_available():
        step_rows(report, args, "ViT-B/16 224px GPU bf16", "vit_base", 224, 16, 32 if args.quick else 128, torch.device("cuda"), "bf16")
    else:
        report.skip("ViT-B/16 224px GPU bf16", "no GPU: skipped")
    if step_ips is not None:
        loading_rows(report, args, step_ips)
    report.note("ratio = reference-style / ours (> 1: ours is faster); images/s in the JSON rows")
    report.note("loader rows: ratio > 1 means the loader alone is faster than the training step (not the bottleneck)")
    return report.finish()


if __name__ == "__main__":
    sys.exit(main())
