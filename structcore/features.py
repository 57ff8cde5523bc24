"""Patch features: backbone maps -> local pooling -> one grid -> per-layer L2 norm -> concat -> W.

Method.md steps 2-4. The projection matrix ``W`` is an explicit array: it is drawn once
(:func:`make_projection`) and then stored and passed back in, never re-drawn.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from structcore.backbones.base import Backbone
from structcore.feature_space import FeatureSpace
from structcore.preprocess import (
    Preprocessing,
    displayed_size,
    image_size,
    load_image,
    preprocess_image,
    valid_patch_mask,
)
from structcore.runtime import tune_allocator
from structcore.settings import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_CROP,
    DEFAULT_DIM,
    DEFAULT_INPUT_GEOMETRY,
    DEFAULT_PROJECTION_SEED,
    DEFAULT_RESIZE,
    DEFAULT_TILE_MAX_SIDE,
    DEFAULT_TILE_OVERLAP,
    backbone_runtime,
)
from structcore.tiles import cut_tiles, tile_count, tiled_valid_mask

ImageSource = str | Path | Image.Image | np.ndarray


def make_projection(in_dim: int, dim: int = DEFAULT_DIM, seed: int = DEFAULT_PROJECTION_SEED) -> np.ndarray:
    """Gaussian random projection ``W`` (in_dim, dim), entries N(0, 1/dim), float32."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((in_dim, dim)) / np.sqrt(dim)).astype(np.float32)


def fuse_layers(layer_maps: Sequence[torch.Tensor], local_pool: int = 1) -> torch.Tensor:
    """Local average pool, resample to the finest grid, L2-normalise each layer, concatenate.

    Args:
        layer_maps: per-layer tensors (B, C_l, H_l, W_l).
        local_pool: size of the stride-1 average pool applied to each map (1 = none).

    Returns:
        (B, H, W, sum C_l) float32, on the finest grid among the layers.
    """
    fused = [F.normalize(layer, p=2.0, dim=1, eps=1e-12) for layer in aligned_layers(layer_maps, local_pool)]
    return torch.cat(fused, dim=1).permute(0, 2, 3, 1)


def aligned_layers(layer_maps: Sequence[torch.Tensor], local_pool: int = 1) -> Iterator[torch.Tensor]:
    """Each layer map as float32, locally averaged (``local_pool``) and resized to the finest grid.

    The common first half of :func:`fuse_layers` and :func:`project_layers`: (B, C_l, H, W) each.
    """
    height = max(int(layer.shape[-2]) for layer in layer_maps)
    width = max(int(layer.shape[-1]) for layer in layer_maps)
    for layer in layer_maps:
        layer = layer.float()
        if local_pool > 1:
            layer = F.avg_pool2d(layer, kernel_size=local_pool, stride=1, padding=local_pool // 2)
        if layer.shape[-2:] != (height, width):
            layer = F.interpolate(layer, size=(height, width), mode="bilinear", align_corners=False)
        yield layer


def project_layers(layer_maps: Sequence[torch.Tensor], projection: torch.Tensor, local_pool: int = 1) -> torch.Tensor:
    """``fuse_layers(layer_maps, local_pool)`` times ``projection``, without building the concatenation.

    ``[n_1, ..., n_L] @ W = sum_l n_l @ W_l`` with ``W_l`` the rows of ``W`` for layer ``l``, so each
    layer is normalised and multiplied by its own slice of ``W`` into one output (equal to
    :func:`fuse_layers` followed by the matmul up to float rounding). Channels-last maps (as
    the fast backbone paths return) are used without any layout copy.

    Returns:
        (B, H*W, D) float32.
    """
    height = max(int(layer.shape[-2]) for layer in layer_maps)
    width = max(int(layer.shape[-1]) for layer in layer_maps)
    batch = int(layer_maps[0].shape[0])
    output: torch.Tensor | None = None
    offset = 0
    for layer in aligned_layers(layer_maps, local_pool):
        channels = int(layer.shape[1])
        rows = layer.permute(0, 2, 3, 1).reshape(batch * height * width, channels)
        norms = torch.linalg.vector_norm(rows, dim=1, keepdim=True).clamp_min_(1e-12)
        rows = rows / norms
        weights = projection[offset : offset + channels]
        output = rows @ weights if output is None else output.addmm_(rows, weights)
        offset += channels
    if output is None or offset != projection.shape[0]:
        msg = f"layers have {offset} channels in all, the projection expects {projection.shape[0]}"
        raise ValueError(msg)
    return output.reshape(batch, height * width, int(projection.shape[1]))


class FeatureExtractor:
    """Images -> projected patch vectors (B, H*W, D) on the backbone's patch grid.

    Args:
        backbone: the frozen backbone.
        projection: ``W`` of shape (sum of the backbone's channels, D).
        geometry: resize / crop settings.
        batch_size: images per backbone call.
        fast: use the backbone's ``extract_fast`` path when it has one (same maps to float
            rounding, see ``docs/performance.md``) and project each layer separately (no concat).
        runtime: what runs :meth:`embed`: ``torch``, or the exported feature graph
            (:mod:`structcore.export_graph`, cached on disk) on ``onnx`` (ONNX Runtime) or
            ``openvino`` (f32); ``None`` reads ``$STRUCTCORE_BACKBONE_RUNTIME`` (default ``torch``).
    """

    def __init__(
        self,
        backbone: Backbone,
        projection: np.ndarray,
        geometry: Preprocessing | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        fast: bool = True,
        runtime: str | None = None,
    ):
        in_dim = sum(backbone.info.channels)
        if projection.ndim != 2 or projection.shape[0] != in_dim:
            msg = f"projection has shape {projection.shape}; backbone {backbone.info.name} needs ({in_dim}, D)"
            raise ValueError(msg)
        self.backbone = backbone
        self.projection = np.ascontiguousarray(projection, dtype=np.float32)
        self.geometry = geometry or Preprocessing()
        self.batch_size = batch_size
        self.fast = fast
        self.runtime = backbone_runtime(runtime)
        self._graph: Any = None
        tune_allocator()
        self._projection_t = torch.from_numpy(self.projection)
        self._mean = torch.tensor(backbone.info.mean, dtype=torch.float32).view(1, 3, 1, 1)
        self._std = torch.tensor(backbone.info.std, dtype=torch.float32).view(1, 3, 1, 1)

    @property
    def dim(self) -> int:
        """Dimension D of the projected vectors."""
        return int(self.projection.shape[1])

    def grid_shape(self) -> tuple[int, int]:
        """Patch grid (H, W) for this geometry, found with one dummy forward pass (cached)."""
        if not hasattr(self, "_grid"):
            dummy = torch.zeros(1, 3, self.geometry.crop, self.geometry.crop)
            maps = self.backbone.extract(dummy)
            self._grid = (max(int(m.shape[-2]) for m in maps), max(int(m.shape[-1]) for m in maps))
        return self._grid

    def prepare(self, sources: Sequence[ImageSource]) -> torch.Tensor:
        """Load + preprocess + normalise images into a (B, 3, crop, crop) tensor."""
        return self.prepare_sized(sources)[0]

    def prepare_sized(self, sources: Sequence[ImageSource]) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """:meth:`prepare`, and each image's original (width, height).

        ``fit``: the padding is set to 0 after normalisation (the backbone's mean colour).
        """
        images = [load_image(source) if isinstance(source, str | Path) else source for source in sources]
        sizes = [image_size(image) for image in images]
        batch = torch.from_numpy(np.stack([preprocess_image(image, self.geometry) for image in images]))
        batch = (batch - self._mean) / self._std
        if self.geometry.tiles:
            msg = "the tile geometry embeds through embed_sized (each image is several tiles)"
            raise ValueError(msg)
        if self.geometry.fits:
            for row, (height, width) in enumerate(self.contents(sizes)):
                batch[row, :, height:, :] = 0.0
                batch[row, :, :, width:] = 0.0
        return batch, sizes

    def contents(self, sizes: Sequence[tuple[int, int]]) -> np.ndarray:
        """(B, 2) int: the (height, width) each image of ``sizes`` (width, height) covers.

        ``fit``: its part of the model's square; ``tile``: the tiled image (its own size, capped).
        """
        return np.asarray([self.geometry.content(size) for size in sizes], dtype=np.int64).reshape(-1, 2)

    def tile_slots(self, sizes: Sequence[tuple[int, int]]) -> int:
        """``tile``: the most tiles among images of ``sizes`` (width, height): the slots of their patch rows."""
        geometry = self.geometry
        counts = [tile_count(content, geometry.resize, geometry.tile_overlap) for content in self.contents(sizes)]
        return max(counts, default=1)

    def valid_patches(self, sizes: Sequence[tuple[int, int]], n_patches: int) -> np.ndarray | None:
        """(B, n_patches) bool: the patches that count in each image's ``n_patches`` rows; ``None`` for squash."""
        geometry = self.geometry
        if not geometry.masks_content:
            return None
        grid = self.grid_shape()
        contents = self.contents(sizes)
        if geometry.tiles:
            slots = n_patches // (grid[0] * grid[1])
            return tiled_valid_mask(contents, grid, geometry.resize, geometry.tile_overlap, slots)
        return valid_patch_mask(contents, grid, geometry.resize)

    def embed_sized(
        self, sources: Sequence[ImageSource], slots: int | None = None
    ) -> tuple[np.ndarray, list[tuple[int, int]]]:
        """Projected patch vectors (B, P, D) of ``sources`` and each image's original (width, height).

        ``tile``: each image's tiles are embedded (``batch_size`` tiles per backbone call) and its
        rows are its tiles' patches one after the other, ``P = slots * h * w``; ``slots`` (at least
        the batch's largest tile count, which is the default) pads the shorter images with zero rows
        that their valid-patch mask leaves out (:mod:`structcore.tiles`).
        """
        if not self.geometry.tiles:
            batch, sizes = self.prepare_sized(sources)
            return self.embed(batch).numpy(), sizes
        images = [load_image(source) if isinstance(source, str | Path) else source for source in sources]
        sizes = [image_size(image) for image in images]
        tiles = np.concatenate([self._tiles(image) for image in images]) if images else np.empty((0, 3, 1, 1))
        side, overlap = self.geometry.resize, self.geometry.tile_overlap
        counts = [tile_count(content, side, overlap) for content in self.contents(sizes)]
        slots = max(counts, default=1) if slots is None else slots
        if counts and max(counts) > slots:
            msg = f"{max(counts)} tiles in an image, more than the {slots} slots given"
            raise ValueError(msg)
        grid = self.grid_shape()
        patches = grid[0] * grid[1]
        output = np.zeros((len(images), slots * patches, self.dim), dtype=np.float32)
        vectors = np.empty((len(tiles), patches, self.dim), dtype=np.float32)
        for start in range(0, len(tiles), self.batch_size):
            chunk = torch.from_numpy(tiles[start : start + self.batch_size])
            vectors[start : start + len(chunk)] = self.embed(chunk).numpy()
        first = 0
        for row, count in enumerate(counts):
            output[row, : count * patches] = vectors[first : first + count].reshape(count * patches, self.dim)
            first += count
        return output, sizes

    def _tiles(self, image: Image.Image | np.ndarray) -> np.ndarray:
        """``tile``: the normalised tiles (T, 3, tile, tile) of one image, the padding 0 (the mean colour)."""
        pixels = preprocess_image(image, self.geometry)
        mean = self._mean.numpy().reshape(3, 1, 1)
        std = self._std.numpy().reshape(3, 1, 1)
        normalised = ((pixels - mean) / std).astype(np.float32)
        return cut_tiles(normalised, self.geometry.resize, self.geometry.tile_overlap, fill=0.0)

    def extract_maps(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The backbone's per-layer maps (its fast path when it has one and ``fast`` is on)."""
        extract = getattr(self.backbone, "extract_fast", None) if self.fast else None
        return list(extract(images) if extract is not None else self.backbone.extract(images))

    def graph_session(self) -> Any:
        """The exported feature graph of this extractor on its ``runtime`` (built and cached on first use)."""
        if self._graph is None:
            from structcore_runtime.graph import GraphSession

            from structcore.export_graph import cached_onnx

            backend = "onnxruntime" if self.runtime == "onnx" else "openvino"
            self._graph = GraphSession(cached_onnx(self), backend=backend, precision="f32")
        return self._graph

    @torch.inference_mode()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised images (B, 3, crop, crop) -> projected patch vectors (B, H*W, D) float32."""
        if self.runtime != "torch":
            return torch.from_numpy(self.graph_session().run(images.numpy()))
        layer_maps = self.extract_maps(images)
        if self.fast:
            return project_layers(layer_maps, self._projection_t, self.backbone.info.local_pool)
        fused = fuse_layers(layer_maps, self.backbone.info.local_pool)
        batch, height, width, channels = fused.shape
        projected = fused.reshape(batch * height * width, channels) @ self._projection_t
        return projected.reshape(batch, height * width, self.dim)

    def iter_embeddings(self, sources: Sequence[ImageSource]) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (start index, (b, H*W, D) float32 array) per batch of ``sources``."""
        for start, vectors, _ in self.iter_embeddings_sized(sources):
            yield start, vectors

    def iter_embeddings_sized(
        self, sources: Sequence[ImageSource], slots: int | None = None
    ) -> Iterator[tuple[int, np.ndarray, list[tuple[int, int]]]]:
        """:meth:`iter_embeddings` with each image's original (width, height).

        ``tile``: one image per step (its tiles fill the backbone's batches), padded to ``slots``.
        """
        step = 1 if self.geometry.tiles else self.batch_size
        for start in range(0, len(sources), step):
            vectors, sizes = self.embed_sized(sources[start : start + step], slots)
            yield start, vectors, sizes


def source_size(source: ImageSource) -> tuple[int, int]:
    """(width, height) of an image source as :func:`load_image` returns it (a file: from its header)."""
    if isinstance(source, str | Path):
        return displayed_size(source)
    return image_size(source)


def new_feature_space(
    backbone: Backbone,
    resize: int = DEFAULT_RESIZE,
    crop: int = DEFAULT_CROP,
    dim: int = DEFAULT_DIM,
    seed: int = DEFAULT_PROJECTION_SEED,
    input_geometry: str = DEFAULT_INPUT_GEOMETRY,
    tile_max_side: int = DEFAULT_TILE_MAX_SIDE,
    tile_overlap: int = DEFAULT_TILE_OVERLAP,
) -> FeatureSpace:
    """A fresh feature space for ``backbone``, drawing ``W`` once from ``seed``."""
    info = backbone.info
    return FeatureSpace(
        backbone=info.name,
        weights_sha256=info.weights_sha256,
        layers=info.layers,
        channels=info.channels,
        mean=tuple(info.mean),
        std=tuple(info.std),
        local_pool=info.local_pool,
        resize=resize,
        crop=crop,
        dim=dim,
        projection=make_projection(sum(info.channels), dim, seed),
        input_geometry=input_geometry,
        **({"tile_max_side": tile_max_side, "tile_overlap": tile_overlap} if input_geometry == "tile" else {}),
    )


def build_extractor(
    space: FeatureSpace, backbone: Backbone, batch_size: int = DEFAULT_BATCH_SIZE, fast: bool = True
) -> FeatureExtractor:
    """A :class:`FeatureExtractor` for ``space``; refuses a backbone whose weights differ."""
    info = backbone.info
    if info.name != space.backbone or info.weights_sha256 != space.weights_sha256:
        msg = (
            f"backbone {info.name} (weights sha256 {info.weights_sha256[:12]}) does not match the feature "
            f"space's {space.backbone} (weights sha256 {space.weights_sha256[:12]})"
        )
        raise ValueError(msg)
    return FeatureExtractor(backbone, space.projection, space.geometry, batch_size=batch_size, fast=fast)
