"""Fast kernels that check themselves: the first time a fast kernel runs in a process (per dtype), its output on that
batch is compared with its reference path's; on an error or a mismatch beyond `tolerance(dtype)` the reference is used
for the rest of the process, with one warning line naming the kernel and the difference (or the error).

The kernels checked (see docs/scaling.md): packed attention `varlen` and `flex` against `segments` (per-sequence SDPA),
and Liger's fused log-probs against the `chunked` LM-head path. A GPU user's first run must not get silently different
numbers from a kernel path that has never run on their hardware, torch or driver.

    difference = max |kernel - reference| / max(1, max |reference|)    (float32; NaN where the reference has none: inf)

What is checked is the forward output of the first call (one attention layer, or one batch's log-probs); the kernels'
gradients are not compared (that would cost a backward of each path). The check costs, once per kernel and dtype per
process, one run of the reference path and, when gradients are on, one more of the kernel (the comparison runs without
gradients). Each process of a distributed run checks on its own.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import torch

# Per dtype: bf16 keeps 8 bits of mantissa (a rounding step of 4e-3), fp16 11; fp32 kernels agree to about 1e-6.
TOLERANCES = {torch.bfloat16: 2e-2, torch.float16: 2e-2, torch.float32: 1e-4, torch.float64: 1e-4}
TF32_TOLERANCE = 2e-3  # fp32 when TF32 matmuls are allowed (10-bit mantissa in the products)

logger = logging.getLogger(__name__)


def tolerance(dtype: torch.dtype) -> float:
    """The largest `difference` accepted from a kernel computing in `dtype`."""
    if dtype == torch.float32 and (torch.backends.cuda.matmul.allow_tf32 or torch.get_float32_matmul_precision() != "highest"):
        return TF32_TOLERANCE
    return TOLERANCES.get(dtype, TOLERANCES[torch.float32])


def difference(output: torch.Tensor, reference: torch.Tensor) -> float:
    """max |output - reference| / max(1, max |reference|) over the finite entries, in float32: relative to the reference's
    largest magnitude, absolute below 1. inf when the shapes differ or the output has a NaN or inf the reference has not."""
    if output.shape != reference.shape:
        return float("inf")
    a, b = output.detach().float(), reference.detach().float()
    agree = (a == b) | (a.isnan() & b.isnan())  # equal values, equal infinities, NaN where the reference has NaN
    gap = torch.where(agree, torch.zeros_like(a), (a - b).abs())
    if gap.numel() == 0:
        return 0.0
    worst = float(gap.max())  # NaN or inf when the output is off where the reference is not
    if worst != worst:
        return float("inf")
    finite = b[b.isfinite()]
    scale = max(1.0, float(finite.abs().max())) if finite.numel() else 1.0
    return worst / scale


class KernelChecks:
    """Which fast kernels have been checked in this process (per dtype), and which fell back to their reference, why."""

    def __init__(self) -> None:
        self._passed: set[tuple[str, str]] = set()
        self._fallen: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _key(kernel: str, dtype: torch.dtype) -> tuple[str, str]:
        return kernel, str(dtype).removeprefix("torch.")

    def fallback_reason(self, kernel: str, dtype: torch.dtype) -> str | None:
        """Why `kernel` in `dtype` is replaced by its reference for the rest of the process, or None."""
        return self._fallen.get(self._key(kernel, dtype))

    def fallbacks(self) -> dict[str, str]:
        """`{"kernel/dtype": why}` of every fallback so far (for run records)."""
        return {f"{kernel}/{dtype}": why for (kernel, dtype), why in self._fallen.items()}

    def reset(self) -> None:
        """Forget every check (tests)."""
        with self._lock:
            self._passed.clear()
            self._fallen.clear()

    def run(
        self,
        kernel: str,
        dtype: torch.dtype,
        fast: Callable[[], torch.Tensor],
        reference: Callable[[], torch.Tensor],
        reference_name: str,
        what: str = "kernel",
    ) -> torch.Tensor:
        """`fast()`, checked against `reference()` on its first call for (`kernel`, `dtype`); `reference()` instead once
        that check has failed. The comparison runs both without gradients; then, when gradients are on, the path chosen
        runs again under autograd, so that what is returned can be trained through and a recomputation under gradient
        checkpointing (which runs the chosen path only) saves the same tensors as the forward did."""
        key = self._key(kernel, dtype)
        if key in self._passed:
            return fast()
        if key in self._fallen:
            return reference()
        grad = torch.is_grad_enabled()
        try:
            with torch.no_grad():
                out = fast()
        except torch.OutOfMemoryError:
            raise  # memory is not the kernel's fault, and the reference path needs more of it
        except Exception as err:  # noqa: BLE001 - any failure of an unproven kernel sends us to the reference
            first_line = (str(err).strip().splitlines() or [""])[0][:300]
            self._fall_back(key, f"failed on its first batch ({type(err).__name__}: {first_line})", reference_name, what)
            return reference()
        with torch.no_grad():
            expected = reference()
        gap, allowed = difference(out, expected), tolerance(dtype)
        if gap <= allowed:
            with self._lock:
                self._passed.add(key)
            return fast() if grad else out
        self._fall_back(
            key,
            f"differs from '{reference_name}' by {gap:.2e} on its first batch (max |difference| / max(1, max |reference|); "
            f"tolerance {allowed:.0e} for {key[1]})",
            reference_name,
            what,
        )
        return reference() if grad else expected

    def _fall_back(self, key: tuple[str, str], why: str, reference_name: str, what: str) -> None:
        with self._lock:
            if key in self._fallen:
                return
            self._fallen[key] = why
        kernel, dtype = key
        logger.warning(
            "kernel check: %s '%s' (%s) %s; using '%s' for the rest of this process", what, kernel, dtype, why, reference_name
        )


CHECKS = KernelChecks()  # the process's checks


def checked(
    kernel: str,
    dtype: torch.dtype,
    fast: Callable[[], torch.Tensor],
    reference: Callable[[], torch.Tensor],
    reference_name: str,
    what: str = "kernel",
) -> torch.Tensor:
    """`CHECKS.run`: the fast kernel's output, checked on its first call in this process (see the module docstring).
    `what` names the kind of kernel in the warning ("packed attention", "log-probs")."""
    return CHECKS.run(kernel, dtype, fast, reference, reference_name, what)


def fallback_reason(kernel: str, dtype: torch.dtype) -> str | None:
    """Why `kernel` in `dtype` has been replaced by its reference in this process, or None."""
    return CHECKS.fallback_reason(kernel, dtype)


def kernel_fallbacks() -> dict[str, str]:
    """Every fallback in this process so far, `{"kernel/dtype": why}`."""
    return CHECKS.fallbacks()


def reset_kernel_checks() -> None:
    """Forget every check in this process (tests)."""
    CHECKS.reset()
