"""Multiply-accumulate counts of a module's forward pass.

Uses torch's own ``FlopCounterMode`` (conv, matmul, linear, attention), which
reports FLOPs = 2 x MACs.  Run on the meta device it costs no compute, so
counting a 300M-parameter encoder at 768 px is instant.
"""
import torch
from torch.utils.flop_counter import FlopCounterMode


def count_macs(module: torch.nn.Module, *inputs: torch.Tensor) -> int:
    """MACs of ``module(*inputs)`` (conv, linear, matmul and attention ops; elementwise ops are not counted)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(*inputs)
    return counter.get_total_flops() // 2


def count_params(module: torch.nn.Module) -> int:
    """Number of parameters (buffers excluded)."""
    return sum(p.numel() for p in module.parameters())
