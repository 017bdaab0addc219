"""The C samplers: greedy, temperature, top-k, top-p, seeding."""
import numpy as np
import pytest

from edgevlm.errors import InputError
from edgevlm.runtime import Sampler

LOGITS = np.log(np.array([0.05, 0.4, 0.1, 0.3, 0.15], dtype=np.float32))


def test_greedy_is_argmax_lowest_id_on_ties():
    assert Sampler().sample(LOGITS, 3) == [1, 1, 1]
    assert Sampler().sample([2.0, 5.0, 5.0, 1.0]) == [1]


def test_greedy_over_a_large_vocab_matches_numpy():
    # the 8-lane argmax: ties in different lanes and in the tail, NaN entries, all -inf
    rng = np.random.default_rng(5)
    for n in (1, 7, 8, 65536, 65541):
        logits = rng.standard_normal(n).astype(np.float32)
        assert Sampler().sample(logits) == [int(np.argmax(logits))]
        logits[n // 3] = logits[n - 1] = 9.0      # tie: the lower id wins
        assert Sampler().sample(logits) == [n // 3 if n > 1 else 0]
        if n > 2:
            logits[0] = np.nan
            assert Sampler().sample(logits) == [n // 3]
    assert Sampler().sample(np.full(20, -np.inf, dtype=np.float32)) == [0]


def test_temperature_one_follows_softmax():
    # metric: max abs difference of empirical vs softmax frequencies over 20000 draws; bound 0.015 (~5 sigma)
    draws = np.array(Sampler(temperature=1.0, seed=1).sample(LOGITS, 20000))
    freq = np.bincount(draws, minlength=5) / len(draws)
    assert np.abs(freq - np.exp(LOGITS)).max() < 0.015


def test_top_k_keeps_only_the_k_best():
    draws = set(Sampler(temperature=5.0, top_k=2, seed=2).sample(LOGITS, 2000))
    assert draws == {1, 3}


def test_top_p_keeps_the_nucleus():
    # p sorted: 0.4 (id 1), 0.3 (id 3), 0.15 (id 4) ... top_p 0.8 needs {1, 3, 4}
    draws = np.array(Sampler(temperature=1.0, top_p=0.8, seed=3).sample(LOGITS, 20000))
    assert set(draws.tolist()) == {1, 3, 4}
    freq = np.bincount(draws, minlength=5)[[1, 3, 4]] / len(draws)
    assert np.abs(freq - np.array([0.4, 0.3, 0.15]) / 0.85).max() < 0.015


def test_top_p_over_a_large_vocab():
    # 65536 logits whose 0.5-nucleus has ~470 tokens: the heap prefix (64 first) has to grow
    rng = np.random.default_rng(0)
    logits = (2.5 * rng.standard_normal(65536)).astype(np.float32)
    p = np.exp(logits - logits.max())
    p /= p.sum()
    order = np.argsort(-p, kind="stable")
    nucleus = set(order[: int(np.searchsorted(np.cumsum(p[order]), 0.5)) + 1].tolist())
    assert len(nucleus) > 64
    draws = set(Sampler(temperature=1.0, top_p=0.5, seed=4).sample(logits, 400))
    assert draws <= nucleus and len(draws) > 50


def test_seed_reproduces():
    s = Sampler(temperature=1.0, seed=9)
    assert s.sample(LOGITS, 50) == s.sample(LOGITS, 50)
    assert s.sample(LOGITS, 50) != Sampler(temperature=1.0, seed=10).sample(LOGITS, 50)


def test_bad_options():
    with pytest.raises(InputError):
        Sampler(top_p=0.0)
    with pytest.raises(InputError):
        Sampler(temperature=-1.0)
