"""Fold inference BatchNorm into the preceding convolution.

    BatchNorm(Conv(x, W, b)) -> Conv(x, W * s, (b - mean) * s + beta),
    s = gamma / sqrt(var + eps), per output channel.

NPUs run the folded conv at no extra cost; a stand-alone BatchNorm would be a
separate (and separately quantized) op.  Only a conv whose single user is the
BatchNorm, with constant parameters, is folded.
"""
import torch

from edgevlm.compiler.passes.base import PassResult, add_constant, fresh_copy, get_constant, op_name
from edgevlm.ops import CONV_OPS, is_transposed_conv

_BNS = {"batch_norm", "_native_batch_norm_legit_no_training"}


def _bn_params(gm, bn):
    """(gamma, beta, mean, var, eps) of an inference BatchNorm node, or None."""
    if op_name(bn) == "batch_norm":
        _, w, b, mean, var, training, _momentum, eps = bn.args[:8]
        if training:
            return None
    else:  # _native_batch_norm_legit_no_training(x, w, b, mean, var, momentum, eps)
        _, w, b, mean, var, _momentum, eps = bn.args[:7]
    mean, var = get_constant(gm, mean), get_constant(gm, var)
    if mean is None or var is None:
        return None
    gamma = torch.ones_like(mean) if w is None else get_constant(gm, w)
    beta = torch.zeros_like(mean) if b is None else get_constant(gm, b)
    if gamma is None or beta is None:
        return None
    return gamma, beta, mean, var, float(eps)


def run(gm: torch.fx.GraphModule, target=None) -> PassResult:
    gm = fresh_copy(gm)
    changed = False
    for bn in list(gm.graph.nodes):
        if op_name(bn) not in _BNS:
            continue
        conv = bn.args[0]
        if op_name(conv) not in CONV_OPS or len(conv.users) != 1:
            continue
        if any(u.args[1] != 0 and u.users for u in bn.users if op_name(bn) != "batch_norm"):
            continue  # batch statistics are used downstream: not an inference BatchNorm
        if is_transposed_conv(conv):  # its weight's channel axis differs
            continue
        params = _bn_params(gm, bn)
        weight = get_constant(gm, conv.args[1])
        bias_node = conv.args[2] if len(conv.args) > 2 else None
        bias = get_constant(gm, bias_node) if bias_node is not None else None
        if params is None or weight is None or (bias_node is not None and bias is None):
            continue
        gamma, beta, mean, var, eps = params
        scale = gamma / torch.sqrt(var + eps)
        new_w = weight * scale.reshape(-1, *([1] * (weight.dim() - 1)))
        new_b = ((bias if bias is not None else torch.zeros_like(mean)) - mean) * scale + beta
        with gm.graph.inserting_before(conv):
            w_node = gm.graph.get_attr(add_constant(gm, f"{conv.args[1].target}_bnfold", new_w))
            b_node = gm.graph.get_attr(add_constant(gm, f"{conv.args[1].target}_bnfold_bias", new_b))
        args = list(conv.args)
        args[1] = w_node
        if len(args) > 2:
            args[2] = b_node
        else:
            args.append(b_node)
        conv.args = tuple(args)
        if op_name(bn) == "batch_norm":
            bn.replace_all_uses_with(conv)
        else:  # tuple output: getitem(bn, 0) is the normalized tensor
            for user in list(bn.users):
                if user.args[1] == 0:
                    user.replace_all_uses_with(conv)
                gm.graph.erase_node(user)
        gm.graph.erase_node(bn)
        changed = True
    return PassResult(gm, changed)
