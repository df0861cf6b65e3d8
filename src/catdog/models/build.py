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


def saved_architecture(model_file) -> str:
    """The architecture a saved ``.h5`` model was built as: its model name, a key of :data:`BUILDERS`.

    Read from the file's model configuration, without loading the network.

    Raises:
        ModelError: The file records no model configuration, or one of no known architecture.
    """
    import json

    import h5py

    from catdog.errors import ModelError

    with h5py.File(model_file, "r") as handle:
        config = handle.attrs.get("model_config")
    name = json.loads(config)["config"]["name"] if config else None
    if name not in BUILDERS:
        raise ModelError(f"{str(model_file)!r} is not a saved model of {' or '.join(BUILDERS)} (its name: {name!r})")
    return name
