"""The dashboard's colours: fixed per format and method, distinct where a chart needs them."""

from __future__ import annotations

from mixprec.dashboard import palette
from mixprec.kernels import formats
from mixprec.scheme import DEFAULT_SCHEMES


def test_every_registered_format_has_its_own_colour() -> None:
    colours = [palette.format_colour(name) for name in formats.names()]
    assert len(set(colours)) == len(colours) == len(formats.names())
    assert palette.KEEP_COLOUR not in colours


def test_the_default_schemes_are_told_apart_and_keep_is_grey() -> None:
    colours = palette.scheme_colours([*DEFAULT_SCHEMES, "keep"])
    assert len(set(colours.values())) == len(DEFAULT_SCHEMES) + 1
    assert colours["keep"] == palette.KEEP_COLOUR
    # quantized inputs: the weight format's hue, darker
    assert colours["w:nvfp4,a:nvfp4"] == palette._darker(colours["w:nvfp4"], palette.INPUTS_SHADE)


def test_colours_do_not_depend_on_what_else_is_shown() -> None:
    alone = palette.scheme_colours(["w:int4_g128"])
    among = palette.scheme_colours(["w:q4_k", "w:int8", "w:int4_g128"])
    assert alone["w:int4_g128"] == among["w:int4_g128"]
    assert palette.scheme_colour("w:int8") == palette.format_colour("int8")


def test_methods_have_fixed_distinct_styles() -> None:
    styles = [palette.method_style(m) for m in ("ilp", "greedy", "uniform", "optuna")]
    assert len(set(styles)) == 4 and len({c for c, _ in styles}) == 4
    assert palette.method_style("ilp") == palette.method_style("ilp")
    assert palette.method_style("someone's own")[0] in palette.METHOD_COLOURS
