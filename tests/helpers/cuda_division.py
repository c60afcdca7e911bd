"""CUDA's division by a scalar, reproduced on the CPU: the CUDA kernel of `tensor / number`
(and of `tensor / 0-dim CPU tensor`) multiplies by the float32 reciprocal of the number, one
rounding more than the CPU's true division, so a reference that divides that way gives other
bits on a GPU. Under `cuda_scalar_division()` every such division on the CPU rounds as CUDA's
does, and a CPU test can show that the reference never divides that way."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

_DIVISIONS: set[Callable[..., Any]] = {
    torch.div,
    torch.divide,
    torch.true_divide,
    torch.Tensor.div,
    torch.Tensor.divide,
    torch.Tensor.true_divide,
    torch.Tensor.__truediv__,
    torch.Tensor.__itruediv__,
    torch.Tensor.div_,
}


def _scalar_divisor(divisor: object) -> float | None:
    """The divisor's value where CUDA would multiply by its reciprocal, else None."""
    if isinstance(divisor, bool):
        return None
    if isinstance(divisor, int | float):
        return float(divisor)
    if isinstance(divisor, torch.Tensor) and divisor.dim() == 0 and divisor.is_floating_point():
        return float(divisor.item())
    return None


class _ReciprocalDivision(TorchFunctionMode):
    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        if func in _DIVISIONS and len(args) == 2 and kwargs.get("rounding_mode") is None:
            dividend, divisor = args
            value = _scalar_divisor(divisor)
            float32 = isinstance(dividend, torch.Tensor) and dividend.dtype == torch.float32
            if float32 and value is not None:
                one = torch.tensor(1.0, dtype=torch.float32)
                inverse = float(one / torch.tensor(value, dtype=torch.float32))
                if func in (torch.Tensor.__itruediv__, torch.Tensor.div_):
                    return dividend.mul_(inverse)
                return torch.mul(dividend, inverse)
        return func(*args, **kwargs)


@contextmanager
def cuda_scalar_division() -> Iterator[None]:
    """Inside, a float32 tensor divided by a number or 0-dim tensor rounds as on CUDA."""
    with _ReciprocalDivision():
        yield
