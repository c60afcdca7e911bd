"""Keep optional back ends quiet: torchao logs missing CUDA extensions when transformers
imports it, and torch logs a deprecation note for its enums. Neither concerns a user here."""

from __future__ import annotations

import logging

NOISY_LOGGERS = ("torchao", "torch.utils._pytree")


def quiet_optional_backends() -> None:
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
