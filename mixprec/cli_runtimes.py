"""Commands for the runtimes plans are made for: `mixprec llamacpp-build` builds llama.cpp
once (tools and C quantizer) into the user cache."""

from __future__ import annotations

from typing import Annotated

import typer

from mixprec.errors import MixprecError, one_of

JobsOption = Annotated[
    int, typer.Option("--jobs", help="Parallel compile jobs (0: one per CPU core).")
]


PartOption = Annotated[
    str,
    typer.Option("--part", help="tools (llama-quantize, -perplexity, -embedding) or quantizer."),
]


def llamacpp_build_command(jobs: JobsOption = 0, part: PartOption = "tools") -> None:
    """Build llama.cpp from the llama-cpp-python sdist into the cache (once; the tools take
    about 15 minutes on 2 cores). Example: mixprec llamacpp-build"""
    import logging

    from mixprec import llamacpp

    if jobs < 0:
        raise MixprecError(f"--jobs {jobs} must be 0 (one per core) or more")
    one_of("--part", part, tuple(llamacpp.PARTS))
    folder = llamacpp.default_root() / part
    if not (folder / llamacpp.STAMP).is_file():
        typer.echo(f"building llama.cpp ({'=='.join(llamacpp.SDIST)}) into {folder}", err=True)
        logging.basicConfig(level=logging.INFO, format="%(message)s")  # the build's progress
    typer.echo(str(llamacpp.build(part, jobs or None).bin))


def register(app: typer.Typer) -> None:
    app.command("llamacpp-build")(llamacpp_build_command)
