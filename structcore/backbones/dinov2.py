"""DINOv2 ViT-S/14, ViT-B/14, ViT-L/14 from a user-supplied checkpoint: the reference backbone.

A compact re-implementation of Meta's ``DinoVisionTransformer`` (``dinov2/models/vision_transformer.py``)
whose parameter names are Meta's, so that ``dinov2_vitb14_pretrain.pth`` loads with no renaming.
A Hugging Face ``facebook/dinov2-base`` style folder (``config.json`` + ``model.safetensors``) is
loaded by mapping its key names onto Meta's. Nothing is ever downloaded and no pickled code is
ever run: ``.pth`` files are read with ``torch.load(weights_only=True)``, the rest with safetensors.

Features (method.md step 2): patch tokens of blocks ``[-1, -3, -6, -9, -12]`` (relative to the
depth; for the 12 blocks of ViT-S/B these are blocks 11, 9, 6, 3, 0, for the 24 of ViT-L blocks 23,
21, 18, 15, 12), returned in that order (deepest first), each passed through the final LayerNorm
as Meta's ``get_intermediate_layers(norm=True)`` does, with the CLS and register tokens dropped,
as maps (B, C, H/14, W/14): 5 x (B, 768, 28, 28) for ViT-B at 392 x 392.

Position embeddings are interpolated exactly as Meta's current code does with the settings of its
torch.hub models: for the plain checkpoints ``interpolate_offset=0.1`` (bicubic with
``scale_factor=((h0 + 0.1) / M, (w0 + 0.1) / M)``, no antialias), for the ``_reg`` checkpoints
(detected by their ``register_tokens``) ``interpolate_offset=0`` (bicubic with ``size=(h0, w0)``)
and ``antialias=True``. See ``docs/dinov2.md``.
"""

from __future__ import annotations

import hashlib
import json
import math
import pickle
import re
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn.functional import interpolate, scaled_dot_product_attention

from structcore.backbones.base import Backbone, BackboneError, BackboneInfo, register_backbone, sha256_file

#: Blocks whose patch tokens are returned, relative to the depth, in the order they are returned.
DINOV2_LAYERS: tuple[int, ...] = (-1, -3, -6, -9, -12)
#: Pixels per patch.
PATCH_SIZE = 14
#: Side of the position-embedding grid of the released checkpoints (img_size 518 = 37 x 14).
PRETRAIN_GRID = 37
#: ImageNet statistics, which DINOv2 was trained with.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
LAYER_NORM_EPS = 1e-6
MLP_RATIO = 4

_RELEASE_PAGE = "https://github.com/facebookresearch/dinov2"
_DOWNLOAD_ROOT = "https://dl.fbaipublicfiles.com/dinov2"


@dataclass(frozen=True)
class ViTSize:
    """One DINOv2 model size.

    Attributes:
        arch: Meta's architecture tag, e.g. ``"vitb14"``.
        title: human-readable name, e.g. ``"ViT-B/14"``.
        embed_dim: token width C.
        depth: number of transformer blocks.
        num_heads: attention heads per block.
        hf_repo: the Hugging Face repository with the same weights.
    """

    arch: str
    title: str
    embed_dim: int
    depth: int
    num_heads: int
    hf_repo: str

    @property
    def name(self) -> str:
        """Registry name of the backbone, e.g. ``"dinov2-vitb14"``."""
        return f"dinov2-{self.arch}"

    @property
    def filename(self) -> str:
        """File name of Meta's released checkpoint, e.g. ``"dinov2_vitb14_pretrain.pth"``."""
        return f"dinov2_{self.arch}_pretrain.pth"

    @property
    def reg_filename(self) -> str:
        """File name of Meta's checkpoint with 4 register tokens."""
        return f"dinov2_{self.arch}_reg4_pretrain.pth"

    @property
    def url(self) -> str:
        """Download address of :attr:`filename` on Meta's release server."""
        return f"{_DOWNLOAD_ROOT}/dinov2_{self.arch}/{self.filename}"


DINOV2_SIZES: dict[str, ViTSize] = {
    "vits14": ViTSize("vits14", "ViT-S/14", 384, 12, 6, "facebook/dinov2-small"),
    "vitb14": ViTSize("vitb14", "ViT-B/14", 768, 12, 12, "facebook/dinov2-base"),
    "vitl14": ViTSize("vitl14", "ViT-L/14", 1024, 24, 16, "facebook/dinov2-large"),
}


def get_size(size: str | ViTSize) -> ViTSize:
    """The :class:`ViTSize` for ``"vits14"``/``"vitb14"``/``"vitl14"`` (or ``"s"``/``"b"``/``"l"``)."""
    if isinstance(size, ViTSize):
        return size
    key = size.lower().removeprefix("dinov2-").removeprefix("dinov2_")
    key = {"s": "vits14", "b": "vitb14", "l": "vitl14"}.get(key, key)
    if key not in DINOV2_SIZES:
        msg = f"unknown DINOv2 size {size!r}; available: {', '.join(DINOV2_SIZES)}"
        raise ValueError(msg)
    return DINOV2_SIZES[key]


def block_indices(depth: int, layers: Sequence[int] = DINOV2_LAYERS) -> tuple[int, ...]:
    """Absolute block indices of ``layers`` (negative indices count from ``depth``), in the given order.

    Raises:
        ValueError: an index falls outside ``[-depth, depth)``.
    """
    out = []
    for layer in layers:
        if not -depth <= layer < depth:
            msg = f"block index {layer} is out of range for a ViT with {depth} blocks"
            raise ValueError(msg)
        out.append(layer % depth)
    return tuple(out)


def default_checkpoint_dir() -> Path:
    """``$TORCH_HOME/hub/checkpoints`` (TORCH_HOME defaults to ``~/.cache/torch``), where torch.hub saves."""
    return Path(torch.hub.get_dir()) / "checkpoints"


# ----------------------------------------------------------------------------------------------
# The network, with Meta's parameter names.
# ----------------------------------------------------------------------------------------------


class PatchEmbed(nn.Module):
    """Non-overlapping 14 x 14 patches -> tokens, a strided convolution (``patch_embed.proj``)."""

    def __init__(self, embed_dim: int, patch_size: int = PATCH_SIZE, in_chans: int = 3):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, H/14 * W/14, C), tokens in row-major order."""
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention with a fused ``qkv`` projection (rows ordered q, k, v)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, C) -> (B, N, C)."""
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, dim // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        out = scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))


class LayerScale(nn.Module):
    """Per-channel scale of a residual branch (``ls1.gamma`` / ``ls2.gamma``)."""

    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Multiply the last dimension by ``gamma``."""
        return x * self.gamma


class Mlp(nn.Module):
    """fc1 -> GELU (exact) -> fc2, hidden width 4C."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., C) -> (..., C)."""
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block with LayerScale: ``x += ls1(attn(norm1(x))); x += ls2(mlp(norm2(x)))``."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.attn = Attention(dim, num_heads)
        self.ls1 = LayerScale(dim)
        self.norm2 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.mlp = Mlp(dim, dim * MLP_RATIO)
        self.ls2 = LayerScale(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, C) -> (B, N, C)."""
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class DinoVisionTransformer(nn.Module):
    """DINOv2's ViT backbone (inference only), parameters named as in Meta's checkpoints.

    Args:
        embed_dim: token width C.
        depth: number of blocks.
        num_heads: attention heads.
        grid: side M of the stored position-embedding grid (37 for the released checkpoints).
        num_register_tokens: register tokens (0 for the plain checkpoints, 4 for ``_reg4``).
        interpolate_offset: Meta's ``interpolate_offset`` (0.1 for plain, 0 for ``_reg``).
        interpolate_antialias: Meta's ``interpolate_antialias`` (False for plain, True for ``_reg``).
    """

    def __init__(
        self,
        embed_dim: int,
        depth: int,
        num_heads: int,
        grid: int = PRETRAIN_GRID,
        num_register_tokens: int = 0,
        interpolate_offset: float = 0.1,
        interpolate_antialias: bool = False,
    ):
        super().__init__()
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.patch_size = PATCH_SIZE
        self.num_register_tokens = num_register_tokens
        self.interpolate_offset = interpolate_offset
        self.interpolate_antialias = interpolate_antialias
        self.patch_embed = PatchEmbed(embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, embed_dim))
        self.register_tokens: nn.Parameter | None = (
            nn.Parameter(torch.zeros(1, num_register_tokens, embed_dim)) if num_register_tokens else None
        )
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim))  # unused at inference; kept for keys
        self.blocks = nn.ModuleList([Block(embed_dim, num_heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim, eps=LAYER_NORM_EPS)

    def interpolate_pos_encoding(self, rows: int, cols: int) -> torch.Tensor:
        """Position embeddings (1, 1 + rows*cols, C) for a rows x cols patch grid, as Meta computes them.

        Meta's ``interpolate_pos_encoding``: no interpolation when the grid has the stored number of
        patches and the image is square; otherwise bicubic interpolation of the M x M grid in float32,
        with ``scale_factor=((rows + offset) / M, (cols + offset) / M)`` when ``interpolate_offset`` is
        non-zero and ``size=(rows, cols)`` when it is zero.
        """
        pos_embed = self.pos_embed
        stored = pos_embed.shape[1] - 1
        if rows * cols == stored and rows == cols:
            return pos_embed
        side = math.isqrt(stored)
        dim = pos_embed.shape[-1]
        patch_pos = pos_embed[:, 1:].float().reshape(1, side, side, dim).permute(0, 3, 1, 2)
        if self.interpolate_offset:
            scale = (
                float(rows + self.interpolate_offset) / side,
                float(cols + self.interpolate_offset) / side,
            )
            patch_pos = interpolate(patch_pos, scale_factor=scale, mode="bicubic", antialias=self.interpolate_antialias)
        else:
            patch_pos = interpolate(patch_pos, size=(rows, cols), mode="bicubic", antialias=self.interpolate_antialias)
        if tuple(patch_pos.shape[-2:]) != (rows, cols):  # pragma: no cover - Meta asserts the same
            msg = f"position embeddings interpolated to {tuple(patch_pos.shape[-2:])}, not {(rows, cols)}"
            raise RuntimeError(msg)
        patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, rows * cols, dim)
        return torch.cat((pos_embed[:, :1].float(), patch_pos), dim=1).to(pos_embed.dtype)

    def prepare_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> tokens (B, 1 + R + N, C): CLS, registers, patches, with position embeddings."""
        batch, _, height, width = images.shape
        x = self.patch_embed(images)
        x = torch.cat((self.cls_token.expand(batch, -1, -1), x), dim=1)
        x = x + self.interpolate_pos_encoding(height // self.patch_size, width // self.patch_size)
        if self.register_tokens is not None:
            x = torch.cat((x[:, :1], self.register_tokens.expand(batch, -1, -1), x[:, 1:]), dim=1)
        return x

    def intermediate_layers(self, images: torch.Tensor, indices: Sequence[int]) -> list[torch.Tensor]:
        """Normed patch-token maps of the blocks ``indices`` (absolute), in that order.

        Equals Meta's ``get_intermediate_layers(images, n=indices, reshape=True, norm=True)`` (whose
        output is ordered by block), reordered as ``indices``. The forward pass stops after the
        deepest block needed.

        Args:
            images: (B, 3, H, W), H and W multiples of 14.
            indices: absolute block indices.

        Returns:
            One (B, C, H/14, W/14) tensor per index.
        """
        batch, _, height, width = images.shape
        rows, cols = height // self.patch_size, width // self.patch_size
        wanted = set(indices)
        last = max(wanted)
        x = self.prepare_tokens(images)
        taken: dict[int, torch.Tensor] = {}
        for index, block in enumerate(self.blocks):
            x = block(x)
            if index in wanted:
                taken[index] = x
            if index == last:
                break
        skip = 1 + self.num_register_tokens
        maps = []
        for index in indices:
            # LayerNorm is per token, so norming the patch tokens alone equals norming all then slicing.
            tokens = self.norm(taken[index][:, skip:])
            maps.append(tokens.reshape(batch, rows, cols, -1).permute(0, 3, 1, 2).contiguous())
        return maps


# ----------------------------------------------------------------------------------------------
# Checkpoints: finding, reading, renaming, checking.
# ----------------------------------------------------------------------------------------------


def _hint(size: ViTSize) -> str:
    return (
        f"get {size.filename} from Meta's DINOv2 release page ({_RELEASE_PAGE}, {size.url}) or the "
        f"Hugging Face folder {size.hf_repo} (config.json + model.safetensors), then pass --weights PATH "
        f"or put the .pth file in $TORCH_HOME/hub/checkpoints/ (here {default_checkpoint_dir()})"
    )


def _error(size: ViTSize, problem: str) -> BackboneError:
    """One sentence: what is wrong, the file expected, where to get it and where to put it."""
    return BackboneError(f"{problem}: {_hint(size)}")


@dataclass(frozen=True)
class _Source:
    files: tuple[Path, ...]  # weights files (several only for a sharded safetensors folder)
    config: Path | None  # a Hugging Face config.json to check


def _resolve(size: ViTSize, weights: str | Path | None) -> _Source:
    if weights is None:
        path = default_checkpoint_dir() / size.filename
        if not path.is_file():
            raise _error(size, f"DINOv2 {size.title} weights not found at {path}")
        return _Source((path,), None)
    path = Path(weights).expanduser()
    if path.is_file():
        return _Source((path,), None)
    if not path.is_dir():
        raise _error(size, f"DINOv2 {size.title} weights not found: {path} does not exist")
    config = path / "config.json"
    if config.is_file():
        shards = tuple(sorted(path.glob("*.safetensors")))
        if shards:
            return _Source(shards, config)
        if (path / "pytorch_model.bin").is_file():
            return _Source((path / "pytorch_model.bin",), config)
        raise _error(size, f"the Hugging Face folder {path} has a config.json but no *.safetensors file")
    for name in (size.filename, size.reg_filename):
        if (path / name).is_file():
            return _Source((path / name,), None)
    raise _error(
        size,
        f"the folder {path} holds neither {size.filename} nor a Hugging Face config.json + model.safetensors",
    )


def _read_pth(size: ViTSize, path: Path) -> dict[str, torch.Tensor]:
    # torch.save writes a zip archive (a raw pickle starting with protocol 2 before PyTorch 1.6);
    # anything else is refused before torch.load sees it.
    with path.open("rb") as handle:
        head = handle.read(2)
    is_zip = zipfile.is_zipfile(path)
    if not is_zip and head != b"\x80\x02":
        raise _error(size, f"{path} is not a PyTorch checkpoint")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
    except pickle.UnpicklingError as error:
        if "weights only" in str(error).lower():
            problem = (
                f"{path} holds pickled Python objects other than tensors, which are refused "
                "(it is read with torch.load(weights_only=True) and no code in it is run)"
            )
        else:
            problem = f"{path} is not a PyTorch checkpoint"
        raise _error(size, problem) from error
    except Exception as error:  # torch.load raises many types on a file that is not a checkpoint
        raise _error(size, f"{path} is not a PyTorch checkpoint") from error
    return _as_state_dict(size, path, loaded)


def _read_safetensors(size: ViTSize, path: Path) -> dict[str, torch.Tensor]:
    try:
        from safetensors.torch import load_file
    except ImportError as error:
        msg = f"reading {path} needs the safetensors package: pip install safetensors (or structcore[dinov2])"
        raise BackboneError(msg) from error
    try:
        return dict(load_file(str(path), device="cpu"))
    except Exception as error:
        raise _error(size, f"{path} is not a safetensors file") from error


def _as_state_dict(size: ViTSize, path: Path, loaded: object) -> dict[str, torch.Tensor]:
    # Meta's training checkpoints wrap the backbone ({"teacher": {"backbone.x": ...}}); others use
    # {"model": ...} or {"state_dict": ...}. The released *_pretrain.pth files are flat.
    if isinstance(loaded, Mapping):
        for wrapper in ("teacher", "model", "state_dict"):
            inner = loaded.get(wrapper)
            if isinstance(inner, Mapping) and "cls_token" not in loaded:
                loaded = inner
                break
    if not isinstance(loaded, Mapping) or not all(
        isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in loaded.items()
    ):
        raise _error(size, f"{path} is not a state dict (a mapping of names to tensors)")
    state: dict[str, torch.Tensor] = {}
    for key, value in loaded.items():
        for prefix in ("module.", "backbone.", "dinov2."):
            key = key.removeprefix(prefix)
        state[key] = value
    return state


_HF_BLOCK = re.compile(r"encoder\.layer\.(\d+)\.(.+)")
_HF_BLOCK_NAMES = {
    "norm1": "norm1",
    "norm2": "norm2",
    "attention.output.dense": "attn.proj",
    "layer_scale1.lambda1": "ls1.gamma",
    "layer_scale2.lambda1": "ls2.gamma",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}
_HF_TOP = {
    "embeddings.cls_token": "cls_token",
    "embeddings.mask_token": "mask_token",
    "embeddings.position_embeddings": "pos_embed",
    "embeddings.register_tokens": "register_tokens",
    "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "layernorm.weight": "norm.weight",
    "layernorm.bias": "norm.bias",
}


def is_hf_state_dict(state: Mapping[str, torch.Tensor]) -> bool:
    """Whether ``state`` uses Hugging Face ``Dinov2Model`` key names."""
    return any(key.startswith(("embeddings.", "encoder.layer.")) for key in state)


def hf_to_meta_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a Hugging Face ``Dinov2Model`` state dict to Meta's names.

    ``encoder.layer.N.attention.attention.{query,key,value}`` are concatenated (in that order) into
    ``blocks.N.attn.qkv``; the other keys are renamed one to one. Keys that are not recognised keep
    their name (they are then reported as unexpected).

    Raises:
        BackboneError: a block has some but not all of query, key and value.
    """
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        key = key.removeprefix("dinov2.")
        if key in _HF_TOP:
            out[_HF_TOP[key]] = value
            continue
        match = _HF_BLOCK.fullmatch(key)
        if match is None:
            out[key] = value
            continue
        index, rest = int(match.group(1)), match.group(2)
        attn = re.fullmatch(r"attention\.attention\.(query|key|value)\.(weight|bias)", rest)
        if attn is not None:
            qkv.setdefault((index, attn.group(2)), {})[attn.group(1)] = value
            continue
        module, _, param = rest.rpartition(".")
        if rest in _HF_BLOCK_NAMES:  # the LayerScale parameters
            out[f"blocks.{index}.{_HF_BLOCK_NAMES[rest]}"] = value
        elif module in _HF_BLOCK_NAMES:
            out[f"blocks.{index}.{_HF_BLOCK_NAMES[module]}.{param}"] = value
        else:
            out[key] = value
    for (index, param), parts in sorted(qkv.items()):
        missing = [name for name in ("query", "key", "value") if name not in parts]
        if missing:
            msg = f"encoder.layer.{index}.attention.attention.{missing[0]}.{param} is missing"
            raise BackboneError(msg)
        out[f"blocks.{index}.attn.qkv.{param}"] = torch.cat([parts["query"], parts["key"], parts["value"]])
    return out


def _check_hf_config(size: ViTSize, config_path: Path) -> None:
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise _error(size, f"{config_path} is not a readable JSON file") from error
    if not isinstance(config, dict):
        raise _error(size, f"{config_path} is not a Hugging Face model config")
    model_type = config.get("model_type")
    if model_type not in ("dinov2", "dinov2_with_registers"):
        raise _error(size, f"{config_path} describes model_type {model_type!r}, not a DINOv2 model")
    found = (config.get("hidden_size"), config.get("num_hidden_layers"), config.get("num_attention_heads"))
    if found != (size.embed_dim, size.depth, size.num_heads):
        raise _error(
            size,
            f"{config_path} describes hidden_size={found[0]}, num_hidden_layers={found[1]}, "
            f"num_attention_heads={found[2]}, not DINOv2 {size.title} "
            f"({size.embed_dim}, {size.depth}, {size.num_heads})",
        )
    expected = {
        "patch_size": PATCH_SIZE,
        "mlp_ratio": MLP_RATIO,
        "use_swiglu_ffn": False,
        "hidden_act": "gelu",
        "qkv_bias": True,
        "layer_norm_eps": LAYER_NORM_EPS,
    }
    for key, value in expected.items():
        if key in config and config[key] != value:
            raise _error(size, f"{config_path} sets {key}={config[key]!r}, this loader supports {value!r}")


def _expected_shapes(size: ViTSize, grid: int, registers: int) -> dict[str, tuple[int, ...]]:
    dim, hidden = size.embed_dim, size.embed_dim * MLP_RATIO
    shapes: dict[str, tuple[int, ...]] = {
        "cls_token": (1, 1, dim),
        "pos_embed": (1, 1 + grid * grid, dim),
        "mask_token": (1, dim),
        "patch_embed.proj.weight": (dim, 3, PATCH_SIZE, PATCH_SIZE),
        "patch_embed.proj.bias": (dim,),
        "norm.weight": (dim,),
        "norm.bias": (dim,),
    }
    if registers:
        shapes["register_tokens"] = (1, registers, dim)
    for index in range(size.depth):
        block = {
            "norm1.weight": (dim,),
            "norm1.bias": (dim,),
            "attn.qkv.weight": (3 * dim, dim),
            "attn.qkv.bias": (3 * dim,),
            "attn.proj.weight": (dim, dim),
            "attn.proj.bias": (dim,),
            "ls1.gamma": (dim,),
            "norm2.weight": (dim,),
            "norm2.bias": (dim,),
            "mlp.fc1.weight": (hidden, dim),
            "mlp.fc1.bias": (hidden,),
            "mlp.fc2.weight": (dim, hidden),
            "mlp.fc2.bias": (dim,),
            "ls2.gamma": (dim,),
        }
        shapes.update({f"blocks.{index}.{name}": shape for name, shape in block.items()})
    return shapes


def build_model(
    state_dict: Mapping[str, torch.Tensor], size: str | ViTSize, source: str = "the checkpoint"
) -> DinoVisionTransformer:
    """Check a state dict in Meta's (or Hugging Face's) names against ``size`` and build the network.

    The register tokens (if any) and the position-embedding grid are read from the state dict;
    with registers, Meta's ``_reg`` interpolation settings are used. Tensors are cast to float32.

    Args:
        state_dict: parameters named as in Meta's checkpoints, or as in Hugging Face's ``Dinov2Model``.
        size: the model size that is expected.
        source: how to name the origin of ``state_dict`` in error messages.

    Raises:
        BackboneError: a key is missing, has the wrong shape, or the checkpoint is of another size.
    """
    vit = get_size(size)
    state = hf_to_meta_state_dict(state_dict) if is_hf_state_dict(state_dict) else dict(state_dict)
    # Training checkpoints chunk the blocks (blocks.<chunk>.<index>.…); the index is global.
    state = {re.sub(r"^blocks\.\d+\.(\d+)\.", r"blocks.\1.", key): value for key, value in state.items()}
    cls_token = state.get("cls_token")
    if cls_token is None or "pos_embed" not in state:
        raise _error(vit, f"{source} is not a DINOv2 checkpoint (it has no cls_token / pos_embed)")
    depth = len({int(m.group(1)) for key in state if (m := re.match(r"blocks\.(\d+)\.", key))})
    width = int(cls_token.shape[-1])
    if (width, depth) != (vit.embed_dim, vit.depth):
        others = [s.title for s in DINOV2_SIZES.values() if (s.embed_dim, s.depth) == (width, depth)]
        what = f"DINOv2 {others[0]}" if others else f"a ViT of width {width} and {depth} blocks"
        raise _error(vit, f"{source} holds {what}, not DINOv2 {vit.title}")
    stored = int(state["pos_embed"].shape[1]) - 1 if state["pos_embed"].ndim == 3 else -1
    grid = math.isqrt(max(stored, 0))
    if grid * grid != stored:
        raise _error(vit, f"{source} has pos_embed of shape {tuple(state['pos_embed'].shape)}, not (1, 1 + M*M, C)")
    registers = state.get("register_tokens")
    num_registers = 0
    if registers is not None:
        if registers.ndim != 3:
            raise _error(vit, f"{source} has register_tokens of shape {tuple(registers.shape)}, not (1, R, C)")
        num_registers = int(registers.shape[1])
    state.setdefault("mask_token", torch.zeros(1, vit.embed_dim))
    expected = _expected_shapes(vit, grid, num_registers)
    for key, shape in expected.items():
        if key not in state:
            raise _error(vit, f"{source} lacks the parameter {key}")
        if tuple(state[key].shape) != shape:
            raise _error(vit, f"{source} has {key} of shape {tuple(state[key].shape)} where {shape} is expected")
    unexpected = sorted(set(state) - set(expected))
    if unexpected:
        warnings.warn(
            f"{source}: ignoring {len(unexpected)} unexpected keys ({', '.join(unexpected[:5])})",
            stacklevel=2,
        )
    with torch.device("meta"):
        model = DinoVisionTransformer(
            vit.embed_dim,
            vit.depth,
            vit.num_heads,
            grid=grid,
            num_register_tokens=num_registers,
            interpolate_offset=0.0 if num_registers else 0.1,
            interpolate_antialias=bool(num_registers),
        )
    params = {key: state[key].detach().to(torch.float32).contiguous() for key in expected}
    model.load_state_dict(params, strict=True, assign=True)
    return model.eval().requires_grad_(False)


def load_checkpoint(size: str | ViTSize, weights: str | Path | None = None) -> tuple[dict[str, torch.Tensor], str]:
    """Find and read a DINOv2 checkpoint; returns (state dict in Meta's names, sha256 of the file).

    Args:
        size: the model size expected (checked against a Hugging Face config.json).
        weights: a ``.pth`` / ``.safetensors`` file; a Hugging Face folder (``config.json`` +
            ``*.safetensors``); a folder holding Meta's ``dinov2_<arch>_pretrain.pth``; or None for
            ``$TORCH_HOME/hub/checkpoints/dinov2_<arch>_pretrain.pth``.

    Raises:
        BackboneError: the file is missing, unreadable, holds pickled objects, or is for another model.
    """
    vit = get_size(size)
    source = _resolve(vit, weights)
    if source.config is not None:
        _check_hf_config(vit, source.config)
    state: dict[str, torch.Tensor] = {}
    for path in source.files:
        if path.suffix == ".safetensors":
            state.update(_read_safetensors(vit, path))
        else:
            state.update(_read_pth(vit, path))
    if len(source.files) == 1:
        digest = sha256_file(source.files[0])
    else:  # a sharded folder: the digest of the shards' names and digests
        lines = "".join(f"{path.name} {sha256_file(path)}\n" for path in source.files)
        digest = hashlib.sha256(lines.encode()).hexdigest()
    if is_hf_state_dict(state):
        state = hf_to_meta_state_dict(state)
    return state, digest


# ----------------------------------------------------------------------------------------------
# The backbone.
# ----------------------------------------------------------------------------------------------


class DinoV2(Backbone):
    """A frozen DINOv2 ViT-*/14: normed patch tokens of blocks ``[-1, -3, -6, -9, -12]``.

    Build it with :meth:`from_weights` (a checkpoint file or folder) or :meth:`from_state_dict`.

    Args:
        model: the network, with its weights.
        size: its size.
        weights_sha256: digest of the weights file (recorded in ``info``).
        layers: block indices relative to the depth, in the order the maps are returned.
    """

    def __init__(
        self,
        model: DinoVisionTransformer,
        size: str | ViTSize,
        weights_sha256: str,
        layers: Sequence[int] = DINOV2_LAYERS,
    ):
        vit = get_size(size)
        self.model = model
        self.size = vit
        self.block_indices = block_indices(vit.depth, layers)
        self.info = BackboneInfo(
            name=vit.name,
            layers=tuple(str(layer) for layer in layers),
            channels=(vit.embed_dim,) * len(self.block_indices),
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            patch_stride=PATCH_SIZE,
            local_pool=1,
            weights_sha256=weights_sha256,
        )

    @classmethod
    def from_weights(
        cls, size: str | ViTSize, weights: str | Path | None = None, layers: Sequence[int] = DINOV2_LAYERS
    ) -> DinoV2:
        """Load from a checkpoint file or folder (see :func:`load_checkpoint`)."""
        vit = get_size(size)
        state, digest = load_checkpoint(vit, weights)
        label = str(weights) if weights is not None else str(default_checkpoint_dir() / vit.filename)
        return cls(build_model(state, vit, source=label), vit, digest, layers)

    @classmethod
    def from_state_dict(
        cls,
        state_dict: Mapping[str, torch.Tensor],
        size: str | ViTSize,
        weights_sha256: str = "",
        layers: Sequence[int] = DINOV2_LAYERS,
    ) -> DinoV2:
        """Build from an in-memory state dict (Meta's or Hugging Face's names)."""
        return cls(build_model(state_dict, size, source="the state dict"), size, weights_sha256, layers)

    @torch.inference_mode()
    def extract(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Normed patch-token maps (B, C, H/14, W/14) of the selected blocks, in ``info.layers`` order.

        Args:
            images: float32 (B, 3, H, W), ImageNet-normalised, H and W multiples of 14.

        Raises:
            ValueError: the batch is not (B, 3, H, W) with H and W multiples of 14.
        """
        if images.ndim != 4 or images.shape[1] != 3:
            msg = f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}"
            raise ValueError(msg)
        if images.shape[-2] % PATCH_SIZE or images.shape[-1] % PATCH_SIZE:
            msg = f"image size {tuple(images.shape[-2:])} is not a multiple of the patch size {PATCH_SIZE}"
            raise ValueError(msg)
        return self.model.intermediate_layers(images.to(self.model.pos_embed.dtype), self.block_indices)


def _factory(arch: str) -> None:
    vit = DINOV2_SIZES[arch]

    @register_backbone(vit.name)
    def _build(weights: str | Path | None = None) -> Backbone:
        return DinoV2.from_weights(vit, weights)

    _build.__doc__ = f"DINOv2 {vit.title} from ``weights`` (default $TORCH_HOME/hub/checkpoints/{vit.filename})."


for _arch in DINOV2_SIZES:
    _factory(_arch)
