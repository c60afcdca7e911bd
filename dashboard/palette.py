"""One colour per number format and one style per method, the same on every page and run:
fixed by the format and strategy registries' order, never by what a chart happens to show."""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from typing import Any

from plotly.colors import qualitative

from mixprec.kernels import formats
from mixprec.scheme import DEFAULT_SCHEMES, Scheme

KEEP_COLOUR = "#c7c7c7"  # unquantized: grey, whatever else a chart shows
# distinct hues first: the default schemes' formats take these, the rest of the registry follows
FORMAT_COLOURS = (*qualitative.D3, *qualitative.Alphabet, *qualitative.Dark24, *qualitative.Light24)
INPUTS_SHADE = 0.55  # a scheme that quantizes inputs too: its weight format's colour, darker
METHOD_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
                  "#17becf", "#bcbd22", "#7f7f7f")  # fmt: skip
METHOD_SYMBOLS = ("circle", "diamond", "square", "triangle-up", "x", "star", "cross",
                  "triangle-down", "pentagon", "hexagon")  # fmt: skip


def _format_order() -> tuple[str, ...]:
    """The default schemes' weight formats first, then every other registered format."""
    first = [Scheme.parse(s).weight for s in DEFAULT_SCHEMES]
    names = [f.name for f in first if f is not None]
    return tuple(dict.fromkeys([*names, *formats.names()]))


FORMAT_ORDER = _format_order()


def _stable(name: str, choices: tuple[str, ...]) -> str:
    """A colour for a name no registry knows, the same in every session."""
    return choices[zlib.crc32(name.encode()) % len(choices)]


def _darker(colour: str, share: float) -> str:
    red, green, blue = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return "#" + "".join(f"{round(c * share):02x}" for c in (red, green, blue))


def format_colour(name: str) -> str:
    if name in FORMAT_ORDER:
        return FORMAT_COLOURS[FORMAT_ORDER.index(name) % len(FORMAT_COLOURS)]
    return _stable(name, FORMAT_COLOURS)


def scheme_colour(scheme: str) -> str:
    """Keep is grey; a scheme is its weight format's colour, darker where inputs are quantized."""
    parsed = Scheme.parse(scheme)
    if parsed.is_keep:
        return KEEP_COLOUR
    own = parsed.weight if parsed.weight is not None else parsed.activation
    assert own is not None  # a scheme that is not keep quantizes something
    colour = format_colour(own.name)
    return _darker(colour, INPUTS_SHADE) if parsed.activation is not None else colour


def scheme_colours(schemes: Iterable[str]) -> dict[str, str]:
    """Plotly's color_discrete_map for these schemes."""
    return {s: scheme_colour(s) for s in schemes}


def _method_order() -> tuple[str, ...]:
    from mixprec.strategies import strategies

    return tuple(strategies())


def method_style(method: str) -> tuple[str, str]:
    """(colour, marker symbol) of a search method: a strategy's by its registry place."""
    base = method.split(" ")[0]
    order = _method_order()
    index = order.index(base) if base in order else zlib.crc32(base.encode())
    return METHOD_COLOURS[index % len(METHOD_COLOURS)], METHOD_SYMBOLS[index % len(METHOD_SYMBOLS)]


def method_colours(methods: Iterable[str]) -> dict[str, str]:
    return {m: method_style(m)[0] for m in methods}


def method_symbols(methods: Iterable[str]) -> dict[str, str]:
    return {m: method_style(m)[1] for m in methods}


ROW_PX = 16  # chart height per labelled row: every label readable
PLAN_MARKER = {"size": 12, "opacity": 0.75, "line": {"width": 1}}  # a plan on a scatter chart:
# large, with an outline, and see-through where plans of several methods overlap


def row_layout(rows: list[str], x_title: str, y_title: str, top: int = 0) -> dict[str, Any]:
    """Layout for a chart with one labelled row per unit or layer, top to bottom in `rows`'
    order; `top` > 0 puts the x axis above the rows with that margin (tall charts)."""
    xaxis: dict[str, Any] = {"title": {"text": x_title}}
    if top:
        xaxis["side"] = "top"
    return {
        "height": max(320, ROW_PX * len(rows) + max(top, 90) + 50),
        "xaxis": xaxis,
        "yaxis": {"title": {"text": y_title}, "autorange": "reversed", "tickmode": "array",
                  "tickvals": list(rows), "automargin": True, "tickfont": {"size": 11}},
        **({"margin": {"t": top}} if top else {}),
    }  # fmt: skip
