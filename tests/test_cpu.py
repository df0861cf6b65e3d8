"""Choosing mixed precision from what the processor can do."""

from __future__ import annotations

from pathlib import Path

import pytest

from catdog.training.cpu import cpu_flags, has_bfloat16, use_mixed_precision

ZEN3 = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 avx avx2 fma\n\nprocessor\t: 1\nflags\t\t: fpu\n"
SAPPHIRE = "processor\t: 0\nflags\t\t: avx512f avx512_bf16 amx_tile amx_bf16\n"


def _cpuinfo(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cpuinfo"
    path.write_text(text)
    return path


def test_cpu_flags_reads_the_first_processor(tmp_path):
    assert cpu_flags(_cpuinfo(tmp_path, ZEN3)) == {"fpu", "sse2", "avx", "avx2", "fma"}
    assert cpu_flags(tmp_path / "missing") == frozenset()
    assert cpu_flags(_cpuinfo(tmp_path, "processor\t: 0\n")) == frozenset()


@pytest.mark.parametrize(
    ("text", "native"),
    [(ZEN3, False), (SAPPHIRE, True), ("flags\t: avx512f avx512_bf16\n", True), ("flags\t: amx_bf16\n", True)],
)
def test_bfloat16_is_native_only_with_its_flags(tmp_path, text, native):
    flags = cpu_flags(_cpuinfo(tmp_path, text))
    assert has_bfloat16(flags) is native
    assert use_mixed_precision("auto", flags) is native


def test_an_explicit_setting_wins_over_the_processor(tmp_path):
    zen3 = cpu_flags(_cpuinfo(tmp_path, ZEN3))
    assert use_mixed_precision(True, zen3) is True
    assert use_mixed_precision(False, frozenset({"avx512_bf16"})) is False


def test_config_accepts_auto_and_refuses_other_words(settings):
    from catdog.config import load_config
    from catdog.errors import ConfigError

    assert settings.training.mixed_precision == "auto"
    with pytest.raises(ConfigError, match="mixed_precision"):
        load_config(overrides=["training.mixed_precision=bf16"], environ={})
