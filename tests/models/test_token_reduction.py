"""Vision token reducers: exact against their definitions, exportable, legal on the HTP, wired into compile."""
import math

import pytest
import torch
import torch.nn.functional as F

from edgevlm.errors import InputError
from edgevlm.models.arch.token_reduction import dct_lowpass_matrix, make_reducer


def _grid(tokens, side):
    return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], side, side)


@pytest.mark.parametrize("k", [1, 2, 3, 4, 6])
def test_pool_equals_adaptive_avg_pool(k):
    x = torch.randn(2, 36, 8)
    want = F.adaptive_avg_pool2d(_grid(x, 6), k).flatten(2).transpose(1, 2)
    assert (make_reducer("pool", 36, k * k)(x) - want).abs().max() < 1e-6  # max abs err


def test_dct_keeping_every_frequency_is_identity_and_constant_grids_stay_constant():
    x = torch.randn(1, 36, 5)
    assert (make_reducer("dct", 36, 36)(x) - x).abs().max() < 1e-5
    assert (make_reducer("dct", 36, 9)(torch.full((1, 36, 3), 2.5)) - 2.5).abs().max() < 1e-5


def test_dct_matches_a_direct_2d_dct_lowpass():
    """Reference: scipy-free separable DCT-II / inverse at size k computed by explicit sums."""
    side, k = 6, 3
    g = torch.randn(side, side, dtype=torch.float64)

    def c(n, i, f):
        s = math.sqrt(1.0 / n) if f == 0 else math.sqrt(2.0 / n)
        return s * math.cos(math.pi * (2 * i + 1) * f / (2 * n))

    coeff = [[sum(c(side, i, u) * c(side, j, v) * g[i, j] for i in range(side) for j in range(side)) for v in range(k)] for u in range(k)]
    want = torch.tensor([[sum(c(k, p, u) * c(k, q, v) * coeff[u][v] for u in range(k) for v in range(k)) for q in range(k)]
                         for p in range(k)]) * (k / side)
    got = (dct_lowpass_matrix(side, k).double() @ g.reshape(-1)).reshape(k, k)
    assert (got - want).abs().max() < 1e-5


@pytest.mark.parametrize("n", [36, 20, 9, 4, 1])
def test_merge_conserves_token_mass(n):
    """Each output is the mean of the tokens merged into it, so count-weighted outputs sum to the inputs' sum."""
    torch.manual_seed(1)
    x = torch.randn(2, 36, 8)
    reducer = make_reducer("merge", 36, n)
    y = reducer(x)
    assert y.shape == (2, n, 8)
    ones = reducer(torch.ones(2, 36, 1))  # all-equal tokens: every output stays 1
    assert (ones - 1).abs().max() < 1e-6
    if n == 36:
        assert torch.equal(y, x)


def test_merge_joins_the_most_similar_pair_and_keeps_source_order():
    x = torch.eye(9).unsqueeze(0)  # 9 orthogonal tokens ...
    x[0, 4] = x[0, 5]  # ... except position 4 (in A) duplicates position 5 (in B)
    y = make_reducer("merge", 9, 8)(x)
    want = torch.cat([x[0, :4], x[0, 5:]]).unsqueeze(0)  # 4 merged into 5, order kept
    assert torch.equal(y, want)


def test_reducers_export_and_stay_on_htp_ops():
    from edgevlm.compiler.passes import run_pipeline
    from edgevlm.targets import get_target

    for method, n in (("dct", 4), ("pool", 4), ("merge", 5)):
        program = torch.export.export(make_reducer(method, 9, n), (torch.randn(1, 9, 16),)).run_decompositions({})
        run_pipeline(program.module(), get_target("sa8295p"))  # raises UnsupportedOpError on a non-HTP op


def test_bad_requests_are_input_errors():
    with pytest.raises(InputError, match="not a square"):
        make_reducer("dct", 36, 8)
    with pytest.raises(InputError, match="outside 1..36"):
        make_reducer("pool", 36, 49)
    with pytest.raises(InputError, match="square token grid"):
        make_reducer("merge", 10, 4)
    with pytest.raises(InputError, match="unknown token reduction"):
        make_reducer("fft", 36, 4)


def test_reduced_vlm_has_fewer_image_tokens_in_every_stage():
    from edgevlm.models import DEFAULT_MODEL, build_model
    from edgevlm.models.zoo.vlms import with_token_reduction

    base = build_model(DEFAULT_MODEL)
    n = base.modules["vlm"].num_image_tokens
    reduced = with_token_reduction(base, 1, "pool")
    vlm = reduced.modules["vlm"]
    assert vlm.num_image_tokens == 1 and reduced.name.endswith("-pool1")
    enc = next(s for s in reduced.stages if s.name == "encoder")
    assert enc.module(*enc.example_inputs).shape[1] == 1
    pre = next(s for s in reduced.stages if s.name == "llm-prefill")
    assert pre.example_inputs[0].shape[1] == vlm.prefill_len < base.modules["vlm"].prefill_len
    assert reduced.meta["config"]["token_reduction"] == {"method": "pool", "tokens": 1, "from": n}


def test_text_guided_keep_picks_the_tokens_closest_to_the_prompt_in_order():
    import numpy as np

    from edgevlm.models.arch.token_pruning import text_guided_keep

    image = np.eye(6, 4, dtype=np.float32)  # tokens 0..3 point along the 4 axes, tokens 4 and 5 are zero
    image[5] = [0.0, 0.9, 0.1, 0.0]  # close to axis 1
    text = np.array([[0, 1, 0, 0], [0, 1, 0.2, 0]], dtype=np.float32)  # the prompt points along axis 1
    assert text_guided_keep(image, text, 2).tolist() == [1, 5]  # best two, in source order
    assert text_guided_keep(image, text, 6).tolist() == list(range(6))


def test_prune_keeps_the_encoder_and_selects_tokens_per_prompt():
    from edgevlm.data.shapes import make_sample
    from edgevlm.models import DEFAULT_MODEL, build_model
    from edgevlm.models.zoo.vlms import with_token_reduction

    base = build_model(DEFAULT_MODEL)
    reduced = with_token_reduction(base, 3, "prune")
    vlm, tok = reduced.modules["vlm"], reduced.modules["tokenizer"]
    assert vlm.prune_to == 3 and vlm.encoder is base.modules["vlm"].encoder
    s = make_sample(5, 0, vlm.image_size)
    full = vlm.image_embeds(vlm.pixel_values(s.image))
    ids = vlm.prompt_ids(tok.encode(s.prompt), tok.bos_id)
    kept = vlm.select_image_tokens(full, ids)
    assert kept.shape[1] == 3 and all(any(torch.equal(row, f) for f in full[0]) for row in kept[0])
    with pytest.raises(InputError, match="outside 1..9"):
        with_token_reduction(base, 10, "prune")
