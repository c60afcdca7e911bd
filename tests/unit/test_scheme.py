"""Scheme strings: parsing, printing and one-line errors."""

from __future__ import annotations

import pytest

from mixprec.errors import MixprecError
from mixprec.scheme import Scheme


@pytest.mark.parametrize("text", ["w:mxfp4", "w:nvfp4,a:nvfp4", "w:int4_g128", "keep", "w:bf16"])
def test_round_trip(text: str) -> None:
    assert str(Scheme.parse(text)) == text


def test_parts_and_whitespace() -> None:
    scheme = Scheme.parse(" w:mxfp8_e4m3 , a:mxfp8_e4m3 ")
    assert scheme.weight is not None and scheme.weight.name == "mxfp8_e4m3"
    assert scheme.activation is not None and scheme.activation.block_size == 32
    assert Scheme.parse("keep").is_keep and Scheme.parse("keep").weight is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("mxfp4", r"'mxfp4' is not ROLE:FORMAT"),
        ("a:mxfp4", r"weight format \(w:FORMAT\) is required"),
        ("w:mxfp4,w:int8", r"weight format given twice"),
        ("w:mxfp5", r"unknown number format 'mxfp5'"),
        ("x:int8", r"'x:int8' is not ROLE:FORMAT"),
        ("w:", r"'w:' is not ROLE:FORMAT"),
        ("", r"is not ROLE:FORMAT"),
    ],
)
def test_malformed_schemes(text: str, message: str) -> None:
    with pytest.raises(MixprecError, match=message):
        Scheme.parse(text)


def test_keep_costs_the_original_bytes() -> None:
    assert Scheme.parse("keep").weight_storage_bytes((10, 20), 4) == 800
    assert Scheme.parse("w:int8").weight_storage_bytes((10, 20), 4) == 200 + 20
