"""Build the configured architecture from settings."""

from __future__ import annotations

from catdog.config import TrainingSettings


def build_model(training: TrainingSettings, num_classes: int = 2):
    """Build the network named by ``training.architecture``.

    Args:
        training: The training settings (architecture, image size, widths).
        num_classes: Size of the softmax output.

    Returns:
        An uncompiled Keras model.
    """
    if training.architecture == "inception":
        from catdog.models.inception import build_inception

        cfg = training.inception
        return build_inception(training.image_size, cfg.stages, cfg.stem_filters, num_classes, cfg.dropout)
    if training.architecture == "resnet":
        from catdog.models.resnet import build_resnet

        cfg = training.resnet
        return build_resnet(
            training.image_size,
            cfg.stage_filters,
            cfg.blocks_per_stage,
            cfg.stem_filters,
            cfg.activation,
            num_classes,
            cfg.dropout,
        )
    raise ValueError(f"unknown architecture {training.architecture!r}")
