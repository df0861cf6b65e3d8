"""The networks: shapes, names, parameter bounds, and the ideas behind them."""

from __future__ import annotations

import numpy as np
import pytest

from catdog.config import load_config
from catdog.models.ops import conv_multiplications, model_multiplications, output_size

# --- The course's arithmetic ------------------------------------------------


def test_5x5_convolution_cost_matches_the_course():
    assert conv_multiplications(28, 28, 192, 32, 5) == 120_422_400


def test_1x1_reduction_cuts_the_cost_about_tenfold():
    reduce = conv_multiplications(28, 28, 192, 16, 1)
    conv5 = conv_multiplications(28, 28, 16, 32, 5)
    assert (reduce, conv5, reduce + conv5) == (2_408_448, 10_035_200, 12_443_648)
    assert 9.5 < 120_422_400 / (reduce + conv5) < 10


@pytest.mark.parametrize(
    "size, kernel, stride, padding, expected",
    [
        (28, 3, 1, "valid", 26),
        (28, 3, 1, "same", 28),
        (28, 2, 2, "valid", 14),
        (7, 3, 2, "same", 4),
        (5, 5, 1, "valid", 1),
    ],
)
def test_output_size_formula(size, kernel, stride, padding, expected):
    assert output_size(size, kernel, stride, padding) == expected


@pytest.mark.parametrize("args", [(0, 3, 1, "same"), (28, 3, 0, "same"), (2, 3, 1, "valid"), (28, 3, 1, "full")])
def test_output_size_rejects_impossible_arguments(args):
    with pytest.raises(ValueError):
        output_size(*args)


# --- Inception ---------------------------------------------------------------


def test_inception_module_depth_is_the_sum_of_its_branches():
    import keras

    from catdog.models.inception import inception_module

    inputs = keras.Input((28, 28, 192))
    out = inception_module(inputs, (64, 96, 128, 16, 32, 32), "m")
    assert tuple(out.shape) == (None, 28, 28, 64 + 128 + 32 + 32)


def test_naive_module_keeps_the_input_depth_in_its_pooling_branch():
    import keras

    from catdog.models.inception import naive_inception_module

    inputs = keras.Input((28, 28, 192))
    out = naive_inception_module(inputs, (64, 128, 32), "naive")
    assert tuple(out.shape) == (None, 28, 28, 64 + 128 + 32 + 192)


def test_reductions_make_the_module_much_cheaper_than_the_naive_one():
    import keras

    from catdog.models.inception import inception_module, naive_inception_module

    inputs = keras.Input((28, 28, 192))
    reduced = keras.Model(inputs, inception_module(inputs, (64, 96, 128, 16, 32, 32), "m"))
    naive = keras.Model(inputs, naive_inception_module(inputs, (64, 128, 32), "n"))
    # 303M against 128M multiplications for these widths (GoogLeNet 3a-like).
    assert model_multiplications(naive) > 2 * model_multiplications(reduced)


# --- The shipped configurations --------------------------------------------


@pytest.fixture(scope="module", params=["inception", "resnet"])
def configured_model(request):
    from catdog.models import build_model

    settings = load_config(environ={}).with_overrides({"training.architecture": request.param})
    return request.param, settings, build_model(settings.training)


def test_configured_model_follows_the_contract(configured_model):
    arch, settings, model = configured_model
    size = settings.training.image_size
    assert model.name == arch
    assert model.input_shape == (None, size, size, 3)
    assert model.output_shape == (None, 2)
    assert model.get_layer("predictions").activation.__name__ == "softmax"
    assert len(model.get_layer("features").output.shape) == 4
    assert model.layers[1].name == "rescale"


def test_configured_model_has_unique_predictable_names(configured_model):
    arch, _, model = configured_model
    names = [layer.name for layer in model.layers]
    assert len(names) == len(set(names))
    assert any(name.startswith("stage1_") for name in names)
    if arch == "inception":
        assert "stage1_module1_concat" in names and "stage1_module1_b3_5x5_reduce_conv" in names
    else:
        assert "stage2_block1_proj_conv" in names and "stage1_block1_add" in names


def test_configured_model_size_fits_this_machine(configured_model):
    arch, _, model = configured_model
    # Big enough to learn; small enough to answer in about 10 ms on a 2-core CPU
    # and to keep the model file (4 bytes a parameter) well under 16 MB.
    assert 1_000_000 < model.count_params() < 4_000_000


def test_configured_model_outputs_probabilities(configured_model):
    _, settings, model = configured_model
    size = settings.training.image_size
    batch = np.random.default_rng(0).integers(0, 256, (2, size, size, 3)).astype("float32")
    probs = model(batch, training=False).numpy()
    assert probs.shape == (2, 2)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


# --- ResNet ideas -------------------------------------------------------------


def test_residual_block_with_zero_residual_is_the_identity():
    import keras

    from catdog.models.resnet import residual_block

    inputs = keras.Input((8, 8, 4))
    model = keras.Model(inputs, residual_block(inputs, 4, "blk"))
    # Zero the last BatchNorm's scale and shift: F(x) = 0, so out = relu(x).
    bn2 = model.get_layer("blk_bn2")
    gamma, beta, mean, var = bn2.get_weights()
    bn2.set_weights([np.zeros_like(gamma), np.zeros_like(beta), mean, var])
    x = np.abs(np.random.default_rng(1).normal(size=(3, 8, 8, 4))).astype("float32")
    np.testing.assert_allclose(model(x, training=False).numpy(), x, rtol=1e-6, atol=1e-6)


def test_residual_block_projects_when_shape_changes():
    import keras

    from catdog.models.resnet import residual_block

    inputs = keras.Input((8, 8, 4))
    out = residual_block(inputs, 16, "blk", stride=2)
    model = keras.Model(inputs, out)
    assert tuple(out.shape) == (None, 4, 4, 16)
    assert "blk_proj_conv" in [layer.name for layer in model.layers]
    same = keras.Model(inputs, residual_block(inputs, 4, "id"))
    assert not any(layer.name.endswith("proj_conv") for layer in same.layers)


def test_leaky_relu_is_selectable():
    import keras

    from catdog.models.resnet import residual_block

    inputs = keras.Input((4, 4, 2))
    model = keras.Model(inputs, residual_block(inputs, 2, "blk", activation="leaky_relu"))
    assert model.get_layer("blk_out").negative_slope == pytest.approx(0.01)


def _first_layer_gradient(skip: bool) -> float:
    import keras
    import tensorflow as tf

    from catdog.models.resnet import residual_block

    keras.utils.set_random_seed(7)
    inputs = keras.Input((8, 8, 8))
    x = keras.layers.Conv2D(8, 3, padding="same", name="first")(inputs)
    for i in range(20):
        x = residual_block(x, 8, f"b{i}", skip=skip, batch_norm=False)
    out = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, out)
    data = tf.constant(np.random.default_rng(0).normal(size=(4, 8, 8, 8)).astype("float32"))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(data, training=True))
    kernel = model.get_layer("first").kernel
    return float(tf.norm(tape.gradient(loss, kernel)))


def test_skip_connections_keep_gradients_alive_in_a_deep_stack():
    with_skip = _first_layer_gradient(skip=True)
    without = _first_layer_gradient(skip=False)
    assert with_skip > 100 * without


# --- The register of architectures ------------------------------------------


def test_every_configurable_architecture_has_a_builder_and_no_other():
    from catdog.config import ARCHITECTURES
    from catdog.models import BUILDERS, build_model

    assert set(BUILDERS) == set(ARCHITECTURES)
    settings = load_config(None, [], environ={})
    with pytest.raises(ValueError, match="unknown architecture 'vgg'"):
        build_model(settings.training.model_copy(update={"architecture": "vgg"}), 3)
