"""Self-supervised pretraining model: masked spectrogram patch reconstruction around a MambaVision backbone.

Why this objective. Labelled music-emotion sets are small (hundreds to ~2 000 songs), unlabelled music is
not. For spectrogram transformers, SSAST (Gong et al., AAAI 2022, "masked spectrogram patch modeling")
showed that masking time-frequency patches of a log-mel and predicting them from the rest learns audio
representations that fine-tune well on small labelled sets; MAE (He et al., 2022) and Audio-MAE made the
same recipe cheap; SSAMBA (Shams et al., 2024) used it unchanged for Mamba audio encoders. Reconstruction
needs no second view, no negatives and no large batch (a contrastive objective does), which suits a CPU
budget of batches of 8-32. SSAST's discriminative term (pick the right patch among candidates) is left out:
it needs per-patch tokens, while a hybrid conv + Mamba backbone has no token per patch.

Masking at the input. MAE drops masked patches from the encoder; that only works when the encoder is a
token sequence. MambaVision starts with a strided conv stem and conv stages that see the whole image, so
masked patches are replaced *in the spectrogram* by a learned patch (``mask_fill="token"``) or by 0 (the
training mean after normalisation, ``"zero"``), as SSAST/SSAMBA do with their mask embedding. The
backbone's own path (stem -> 4 stages -> norm, :meth:`MaskedSpecModel.encode`, i.e. ``forward_features``
without the final pooling) encodes the chunk; a light conv decoder upsamples the final map to the patch
grid and predicts each patch's normalised log-mel values; the loss is the MSE over masked patches only
(:func:`masked_mse`), so the visible patches (copied through the input) cannot be "reconstructed" for free.
The decoder sees the deepest map only (no skip connections), so the whole backbone must carry the context.

Shapes: ``x [B, 1, n_mels, frames]``; patches ``[B, N, P]`` with ``N = (n_mels // pm) * (frames // pf)`` and
``P = pm * pf``; a trailing partial patch (mels or frames not divisible) is cropped off.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deam_mamba.config import Config
from deam_mamba.core.errors import ConfigError
from deam_mamba.models.mambavision import MambaVision
from deam_mamba.models.registry import create_model

FORMAT = "deam-mamba-pretrain/1"  # stored in the pretraining checkpoints' metadata
BACKBONE_PREFIX = "backbone."


def patchify(x: Tensor, pm: int, pf: int) -> Tensor:
    """``[B, 1, M, T] -> [B, N, pm * pf]`` (row-major over the ``(M // pm, T // pf)`` grid; remainder cropped)."""
    b, c, m, t = x.shape
    if c != 1:
        raise ValueError(f"expected one input channel, got {c}")
    gm, gt = m // pm, t // pf
    if gm < 1 or gt < 1:
        raise ValueError(f"input {m} x {t} is smaller than one {pm} x {pf} patch")
    x = x[:, 0, : gm * pm, : gt * pf].reshape(b, gm, pm, gt, pf)
    return x.permute(0, 1, 3, 2, 4).reshape(b, gm * gt, pm * pf)


def unpatchify(p: Tensor, gm: int, gt: int, pm: int, pf: int) -> Tensor:
    """Inverse of :func:`patchify`: ``[B, N, pm * pf] -> [B, 1, gm * pm, gt * pf]``."""
    b = p.shape[0]
    return p.reshape(b, gm, gt, pm, pf).permute(0, 1, 3, 2, 4).reshape(b, 1, gm * pm, gt * pf)


def random_mask(batch: int, n_patches: int, ratio: float, generator: torch.Generator | None = None,
                device: torch.device | str = "cpu") -> Tensor:
    """``[batch, n_patches]`` bool, True = masked: exactly ``round(ratio * n)`` (at least 1, at most n - 1) per row."""
    k = min(max(1, int(round(ratio * n_patches))), max(1, n_patches - 1))
    scores = torch.rand(batch, n_patches, generator=generator)
    idx = scores.argsort(dim=1)[:, :k]
    mask = torch.zeros(batch, n_patches, dtype=torch.bool)
    mask.scatter_(1, idx, True)
    return mask.to(device)


def masked_mse(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Mean squared error over the masked patches only: ``pred, target [B, N, P]``, ``mask [B, N]`` bool."""
    per_patch = (pred.float() - target.float()).pow(2).mean(dim=-1)  # [B, N]
    m = mask.float()
    return (per_patch * m).sum() / m.sum().clamp_min(1.0)


def band_mean_baseline(x: Tensor, mask: Tensor, pm: int, pf: int) -> Tensor:
    """The masked-patch MSE of a model that learned nothing but band levels: every masked value predicted by
    the mean of its mel band over the crop's visible frames. ``x [B, 1, M, T]``, ``mask [B, N]``. A pretrained
    model has to score below this to have learned more than each crop's spectral envelope."""
    target = patchify(x, pm, pf)
    gm, gt = x.shape[-2] // pm, x.shape[-1] // pf
    crop = x[..., : gm * pm, : gt * pf]
    vis = unpatchify((~mask).to(x.dtype)[..., None].expand_as(target), gm, gt, pm, pf)
    band = (crop * vis).sum(-1, keepdim=True) / vis.sum(-1, keepdim=True).clamp_min(1.0)
    return masked_mse(patchify(band.expand_as(crop).contiguous(), pm, pf), target, mask)


def info_nce(a: Tensor, b: Tensor, groups: Tensor | None = None, temperature: float = 0.1) -> Tensor:
    """Symmetric InfoNCE between two views: ``a, b [B, D]`` (L2-normalised here), row i of ``a`` and of ``b``
    are crops of one song. ``groups [B]``: song ids; other rows of the same song are not used as negatives."""
    a, b = F.normalize(a.float(), dim=-1), F.normalize(b.float(), dim=-1)
    logits = a @ b.T / temperature
    if groups is not None:
        same = (groups[:, None] == groups[None, :]) & ~torch.eye(len(groups), dtype=torch.bool, device=a.device)
        logits = logits.masked_fill(same, float("-inf"))
    target = torch.arange(len(a), device=a.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


class _DecoderBlock(nn.Module):
    """Residual depthwise 3x3 + pointwise conv block on ``[B, d, gm, gt]``."""

    def __init__(self, d: int):
        super().__init__()
        self.dw = nn.Conv2d(d, d, 3, padding=1, groups=d)
        self.norm = nn.GroupNorm(1, d)
        self.pw = nn.Conv2d(d, d, 1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.pw(F.gelu(self.norm(self.dw(x))))


class MaskedSpecModel(nn.Module):
    """Backbone + mask token + light decoder for masked spectrogram patch reconstruction.

    ``backbone``: a :class:`MambaVision` (its head is unused; build it with ``num_classes=0``).
    ``patch``: ``(patch_mels, patch_frames)``. ``mask_fill``: ``"token"`` (learned patch, init 0) or ``"zero"``.
    ``proj_dim``: with a value, a 2-layer projection of the pooled map for the contrastive term (``emb``).
    ``distill_dim``: with a value, a head from the pooled map (``forward_features``) to a teacher's target vector
    (``distill``): a 2-layer MLP with ``distill_hidden`` units, or one Linear when ``distill_hidden`` is 0. Like the
    decoder and ``proj``, it is not part of the backbone that ``model.init`` transfers.
    ``reconstruct``: False leaves out the mask token and the decoder (objective ``distill`` alone).
    """

    def __init__(self, backbone: nn.Module, patch: tuple[int, int] = (16, 16), decoder_dim: int = 128,
                 decoder_depth: int = 2, mask_fill: str = "token", proj_dim: int | None = None,
                 distill_dim: int | None = None, distill_hidden: int = 512, reconstruct: bool = True):
        super().__init__()
        if not isinstance(backbone, MambaVision):
            raise ConfigError(f"pretraining needs a MambaVision backbone (the spatial map before pooling), got "
                              f"{type(backbone).__name__}; choose a mambavision_* model")
        if mask_fill not in ("token", "zero"):
            raise ConfigError(f"mask_fill must be 'token' or 'zero', got {mask_fill!r}")
        self.backbone = backbone
        self.pm, self.pf = int(patch[0]), int(patch[1])
        self.mask_fill = mask_fill
        p = self.pm * self.pf
        c = backbone.num_features
        self.reconstruct = bool(reconstruct)
        self.mask_token: nn.Parameter | None = None
        if self.reconstruct:
            self.mask_token = nn.Parameter(torch.zeros(p)) if mask_fill == "token" else None
            self.dec_in = nn.Conv2d(c, decoder_dim, 1)
            self.dec_blocks = nn.Sequential(*[_DecoderBlock(decoder_dim) for _ in range(decoder_depth)])
            self.dec_out = nn.Conv2d(decoder_dim, p, 1)
        self.proj = nn.Sequential(nn.Linear(c, c), nn.GELU(), nn.Linear(c, proj_dim)) if proj_dim else None
        self.distill_head: nn.Module | None = None
        if distill_dim:
            self.distill_head = (nn.Sequential(nn.Linear(c, distill_hidden), nn.GELU(),
                                               nn.Linear(distill_hidden, distill_dim))
                                 if distill_hidden else nn.Linear(c, distill_dim))

    def encode(self, x: Tensor) -> Tensor:
        """The backbone's ``forward_features`` path without the pooling: ``[B, 1, M, T] -> [B, C, h, w]``."""
        bb = self.backbone
        x = bb.patch_embed(x)
        for level in bb.levels:
            x = level(x)
        return bb.norm(x)

    def embed(self, x: Tensor) -> Tensor:
        """Contrastive embedding of an unmasked crop: ``[B, 1, M, T] -> [B, proj_dim]`` (pooled map, projected)."""
        if self.proj is None:
            raise ConfigError("this model has no projection head (build it with proj_dim)")
        return self.proj(self.encode(x).mean(dim=(2, 3)))

    def distill(self, x: Tensor) -> Tensor:
        """Teacher-target prediction of an unmasked crop: ``[B, 1, M, T] -> [B, distill_dim]`` (pooled map =
        the backbone's ``forward_features``, through the distillation head)."""
        if self.distill_head is None:
            raise ConfigError("this model has no distillation head (build it with distill_dim)")
        return self.distill_head(self.encode(x).mean(dim=(2, 3)))

    def apply_mask(self, patches: Tensor, mask: Tensor) -> Tensor:
        """``patches [B, N, P]`` with the masked ones replaced by the mask token (or 0)."""
        fill = self.mask_token.to(patches.dtype) if self.mask_token is not None else patches.new_zeros(())
        return torch.where(mask[..., None], fill.expand_as(patches), patches)

    def forward(self, x: Tensor, mask: Tensor | None = None, ratio: float = 0.6,
                generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """``x [B, 1, M, T]`` normalised log-mel -> ``{pred, target [B, N, P], mask [B, N] bool}`` (+ ``emb
        [B, proj_dim]`` of the masked crop when the model has a projection head, ``distill [B, distill_dim]`` when
        it has a distillation head).

        ``mask``: which patches to hide (True); None draws ``ratio`` of them at random (``generator``).
        """
        if not self.reconstruct:
            raise ConfigError("this model was built without the reconstruction decoder (objective distill): "
                              "use distill()")
        target = patchify(x, self.pm, self.pf)
        b, n, _ = target.shape
        gm, gt = x.shape[-2] // self.pm, x.shape[-1] // self.pf
        if mask is None:
            mask = random_mask(b, n, ratio, generator, device=x.device)
        if mask.shape != (b, n):
            raise ValueError(f"mask must be [{b}, {n}], got {tuple(mask.shape)}")
        xin = unpatchify(self.apply_mask(target, mask), gm, gt, self.pm, self.pf)
        z = self.encode(xin)
        h = self.dec_in(z)
        h = F.interpolate(h, size=(gm, gt), mode="bilinear", align_corners=False)
        pred = self.dec_out(self.dec_blocks(h))  # [B, P, gm, gt]
        pred = pred.flatten(2).transpose(1, 2)  # [B, N, P] (row-major grid, as patchify)
        out = {"pred": pred, "target": target, "mask": mask}
        pooled = z.mean(dim=(2, 3))
        if self.proj is not None:
            out["emb"] = self.proj(pooled)
        if self.distill_head is not None:
            out["distill"] = self.distill_head(pooled)
        return out

    def loss(self, out: dict[str, Tensor]) -> Tensor:
        """MSE over the masked patches of ``forward``'s output."""
        return masked_mse(out["pred"], out["target"], out["mask"])

    def backbone_state_dict(self) -> dict[str, Tensor]:
        """The backbone's tensors under the names a fresh ``create_model(name)`` uses (no ``backbone.`` prefix)."""
        return {k: v.detach() for k, v in self.backbone.state_dict().items()}


def build_pretrain_model(cfg: Config, distill_dim: int | None = None) -> MaskedSpecModel:
    """The pretraining network of ``cfg``: ``cfg.model`` as backbone (no head) + ``cfg.pretrain``'s decoder
    (not for objective ``distill``) and heads; ``distill_dim``: the teacher's vector size (``distill`` objectives)."""
    kwargs = {**cfg.model.kwargs, "num_classes": 0}
    backbone = create_model(cfg.model.name, **kwargs)
    p = cfg.pretrain
    if cfg.features.n_mels < p.patch_mels:
        raise ConfigError(f"pretrain.patch_mels={p.patch_mels} is larger than features.n_mels={cfg.features.n_mels}")
    return MaskedSpecModel(backbone, (p.patch_mels, p.patch_frames), decoder_dim=p.decoder_dim,
                           decoder_depth=p.decoder_depth, mask_fill=p.mask_fill,
                           proj_dim=p.proj_dim if p.objective in ("contrast", "both") else None,
                           distill_dim=distill_dim if "distill" in p.objective else None,
                           distill_hidden=p.distill_hidden, reconstruct=p.objective != "distill")
