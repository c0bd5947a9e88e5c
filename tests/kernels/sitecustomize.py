"""Another GEMM kernel, emulated: with DEEPFM_KERNEL_JITTER=1 every linear layer's output
moves by three float32 ulps up, down or not at all, chosen by the row's position in the
batch and the batch's size.

Real BLAS kernels do this: MKL's AVX-512 GEMM takes rows past a multiple of its block
through a remainder path that rounds differently, so the same record scores a few ulps
apart at another batch position or in another batch size. A test that holds only for one
kernel (exact equality across positions or shapes) fails under this on any CPU; a test that
compares identical computations (same batch shapes, same threads) still sees identical bits,
because the jitter is a function of (position, batch size) only.

Used through PYTHONPATH (so spawned processes get it too) by .ci/kernel-check.
"""

from __future__ import annotations

import os

if os.environ.get("DEEPFM_KERNEL_JITTER") == "1":
    import torch
    import torch.nn.functional as F

    _linear = F.linear

    def _jittered_linear(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        out = _linear(input, weight, bias)
        if (
            out.dim() < 2
            or not out.dtype.is_floating_point
            or torch.jit.is_tracing()
            or torch.compiler.is_compiling()
            or torch.compiler.is_exporting()
        ):
            return out
        n = out.shape[0]
        step = ((torch.arange(n, device=out.device) * 5 + n) % 3 - 1) * 3  # -3, 0 or +3 ulps per row
        step = step.reshape(n, *([1] * (out.dim() - 1))).to(out.dtype)
        up = torch.nextafter(out.detach(), torch.full_like(out, float("inf"))) - out.detach()
        down = out.detach() - torch.nextafter(out.detach(), torch.full_like(out, float("-inf")))
        moved = torch.where(step > 0, up, down) * step
        return out + moved  # the gradient is the layer's own

    F.linear = _jittered_linear
