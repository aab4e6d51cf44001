"""`nqs.synthetic_ladder`: the design against a row-by-row construction, the losses, the errors."""

import numpy as np
import pytest

import nqs_engine as nqs


def row_by_row(seq_len):
    """The design written out run by run, as the notebooks first did (independent of the
    library's vectorised form): (split, type, N, B, K) per run, in order."""
    rows = []

    def isoflop(split, budgets, smallest, sizes):
        for C in budgets:
            for i in range(sizes):
                N = smallest * 2.0**i
                D = C / (6 * N)
                if 0.5 <= D / N <= 700:
                    B = round((D / (6 * seq_len)) ** 0.5)
                    rows.append((split, "isoflop", N, B, round(D / (B * seq_len)), C))

    def isotoken(split, N, tokens_per_param, first_batch, doublings, min_steps):
        for tpp in tokens_per_param:
            for i in range(doublings):
                B = first_batch * 2.0**i
                K = round(tpp * N / (B * seq_len))
                if K >= min_steps:
                    rows.append((split, "isotoken", N, B, K, tpp))

    isoflop("train", [1e15, 4e15, 1.5e16, 6e16], 2.5e5, 11)
    isotoken("train", 1e7, [1.5, 6, 12, 25], 96, 10, 40)
    isotoken("train", 1e8, [0.15, 0.6], 192, 7, 40)
    isoflop("test", [2.4e17, 9.5e17, 3.8e18, 1.5e19, 6e19], 8e6, 9)
    isotoken("test", 1e7, [50, 100, 1600], 48, 14, 100)
    return rows


def test_the_design_is_the_pythia_like_ladder():
    runs = nqs.synthetic_ladder()
    rows = row_by_row(128)
    assert list(runs) == ["N", "B", "K", "loss", "split", "type", "filtered"]
    assert [tuple(r[:2]) for r in rows] == list(zip(runs["split"], runs["type"]))
    for j, name in enumerate(("N", "B", "K"), start=2):
        np.testing.assert_array_equal(runs[name], [r[j] for r in rows], err_msg=name)
    assert not runs["filtered"].any()
    # The shape of the measured ladder: 64 runs a split, the test runs ~1000x the compute.
    train = runs["split"] == "train"
    assert train.sum() == 64 and (~train).sum() == 64
    C = 6 * runs["N"] * runs["B"] * runs["K"] * 128
    np.testing.assert_allclose([C[train].max(), C[~train].max()], [6e16, 6e19], rtol=0.02)
    assert set(runs["type"]) == {"isoflop", "isotoken"}


# Each sequence length is a new design, so a new risk program: two, not a search.
@pytest.mark.parametrize("seq_len", [128, 2048])
def test_runs_keep_their_budget_and_their_tokens_per_parameter(seq_len):
    """At any sequence length: an isoFLOP run's compute is its budget and an isotoken
    run's tokens per parameter its own, up to the rounding of K (the design follows)."""
    runs = nqs.synthetic_ladder(noise=0.0, seq_len=seq_len)
    rows = row_by_row(seq_len)
    for j, name in enumerate(("N", "B", "K"), start=2):
        np.testing.assert_array_equal(runs[name], [r[j] for r in rows], err_msg=name)
    target = np.array([r[5] for r in rows])
    tokens = runs["B"] * runs["K"] * seq_len
    iso = runs["type"] == "isoflop"
    # K rounds to within half a step: the relative error is at most 1 / (2K).
    bound = 0.5 / runs["K"] + 1e-12
    assert np.all(np.abs(6 * runs["N"][iso] * tokens[iso] / target[iso] - 1) <= bound[iso])
    assert np.all(np.abs(tokens[~iso] / runs["N"][~iso] / target[~iso] - 1) <= bound[~iso])


def test_any_sequence_length_gives_real_runs():
    """Even sequences longer than a run's tokens: at least one sequence and one step each."""
    runs = nqs.synthetic_ladder(seq_len=10**9)
    assert np.all(runs["B"] >= 1) and np.all(runs["K"] >= 1)
    assert np.all(np.isfinite(runs["loss"]))


def test_losses_are_the_risk_times_seeded_lognormal_noise():
    params, lr = nqs.preset("pythia-owt2")
    clean = nqs.synthetic_ladder(noise=0.0)
    expected = np.asarray(nqs.risk(params, clean["N"], clean["B"], clean["K"], lr=lr).total)
    np.testing.assert_allclose(clean["loss"], expected, rtol=1e-13)
    noisy = nqs.synthetic_ladder(noise=0.05, seed=3)
    eps = np.log(noisy["loss"] / clean["loss"]) / 0.05
    np.testing.assert_allclose(eps, np.random.default_rng(3).standard_normal(eps.size),
                               rtol=1e-9, atol=1e-9)
    again = nqs.synthetic_ladder(noise=0.05, seed=3)
    np.testing.assert_array_equal(again["loss"], noisy["loss"])
    assert not np.allclose(nqs.synthetic_ladder(noise=0.05, seed=4)["loss"], noisy["loss"])


def test_other_parameters_give_their_own_losses():
    params, lr = nqs.preset("pythia-owt2")
    other = nqs.NQSParams(**{**params.to_dict(), "e_irr": 1.0})
    runs = nqs.synthetic_ladder(other, lr, noise=0.0)
    base = nqs.synthetic_ladder(noise=0.0)
    np.testing.assert_allclose(runs["loss"] - base["loss"], 1.0 - float(params.e_irr),
                               rtol=1e-9)


@pytest.mark.parametrize("kwargs,match", [
    (dict(noise=-0.1), "noise must be a finite number >= 0, got -0.1"),
    (dict(noise=float("nan")), "noise must be a finite number"),
    (dict(noise="x"), "noise must be a number, got 'x'"),
    (dict(noise=True), "noise must be a number, got True"),
    (dict(seed=-1), "seed must be an integer >= 0, got -1"),
    (dict(seed=1.5), "seed must be an integer"),
    (dict(seq_len=0), "seq_len must be an integer >= 1, got 0"),
    (dict(seq_len=128.0), "seq_len must be an integer >= 1, got 128.0"),
    (dict(lr=1.999), "give params and lr together"),
])
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        nqs.synthetic_ladder(**kwargs)


def test_params_without_lr_are_refused():
    params, _ = nqs.preset("pythia-owt2")
    with pytest.raises(ValueError, match="give params and lr together"):
        nqs.synthetic_ladder(params)
