"""Build the configured architecture from settings.

:data:`BUILDERS` is the one register of architectures: ``training.architecture``
names one of its keys, and the commands that take an architecture offer them.
"""

from __future__ import annotations

from catdog.config import TrainingSettings


def _inception(training: TrainingSettings, num_classes: int):
    from catdog.models.inception import build_inception

    cfg = training.inception
    return build_inception(training.image_size, cfg.stages, cfg.stem_filters, num_classes, cfg.dropout)


def _resnet(training: TrainingSettings, num_classes: int):
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


# Each architecture's builder, by the name training.architecture gives it.
BUILDERS = {"inception": _inception, "resnet": _resnet}


def build_model(training: TrainingSettings, num_classes: int = 2):
    """Build the network named by ``training.architecture``.

    Args:
        training: The training settings (architecture, image size, widths).
        num_classes: Size of the softmax output.

    Returns:
        An uncompiled Keras model.

    Raises:
        ValueError: No builder has that name.
    """
    try:
        builder = BUILDERS[training.architecture]
    except KeyError:
        raise ValueError(f"unknown architecture {training.architecture!r}") from None
    return builder(training, num_classes)
