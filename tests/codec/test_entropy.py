"""The entropy coder is real and bit-exact: symbols and latents survive the round trip unchanged."""

from __future__ import annotations

import pytest
import torch

from gnvc.codec.entropy import ConditionalHyperprior
from gnvc.codec.latent_codec import ContextualLatentCodec


def test_symbols_round_trip_exactly():
    torch.manual_seed(0)
    hp = ConditionalHyperprior(y_channels=8, z_channels=8, channels=16)
    hp.entropy_bottleneck.update(force=True)
    from compressai.models.google import get_scale_table

    from gnvc.codec.integer import quantize_all

    hp.gaussian_conditional.update_scale_table(get_scale_table(), force=True)
    hp.update_integer(torch.ones(2, 8) * torch.tensor([[0.5], [2.0]]))
    quantize_all(hp)
    y = torch.randn(1, 8, 6, 5) * 4
    for q in (0, 1):
        y_int, strings = hp.compress(y, q)
        assert torch.equal(hp.decompress(strings, (6, 5), q), y_int)
        # ŷ is y quantised in the gained domain: within half a step (1 / (2·gain)) plus the grid.
        err = (y_int / 1024 - y).abs().max().item()
        assert err <= 0.5 / (0.5 if q == 0 else 2.0) + 0.01
    assert len(strings[1]) > 4  # something was actually coded


def _codec() -> ContextualLatentCodec:
    torch.manual_seed(1)
    codec = ContextualLatentCodec(channels=32, y_channels=16, z_channels=16, context_channels=16, num_qualities=4)
    codec.update(force=True)
    return codec.eval()


def test_latent_sequence_round_trip_bit_exact():
    codec = _codec()
    latents = torch.randn(1, 16, 4, 9, 13)
    for q in range(codec.num_qualities):
        for period in (0, 2):
            data, l_hat, ctx = codec.compress(latents, q, intra_period=period)
            l_dec, ctx_dec = codec.decompress(data, intra_period=period)
            assert torch.equal(l_hat, l_dec)
            assert torch.equal(ctx, ctx_dec)
            assert l_dec.shape == latents.shape


def test_integer_loop_tracks_the_float_training_pass():
    """The integer decoder computes what the float model computes, to within fixed-point rounding."""
    codec = _codec()
    latents = torch.randn(1, 16, 3, 8, 8)
    with torch.no_grad():
        flt = codec(latents, torch.tensor([3])).latents_hat
    _, l_int, _ = codec.compress(latents, 3)
    assert (flt - l_int).abs().max().item() < 0.05 * max(1.0, flt.abs().max().item())


def test_round_trip_independent_of_thread_count():
    codec = _codec()
    latents = torch.randn(1, 16, 5, 16, 12)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        data, l_hat, _ = codec.compress(latents, 2)
        torch.set_num_threads(1)
        l_dec, _ = codec.decompress(data)
    finally:
        torch.set_num_threads(old)
    assert torch.equal(l_hat, l_dec)


def test_training_pass_estimates_rate_close_to_real_rate():
    codec = _codec()
    latents = torch.randn(1, 16, 3, 16, 16)
    with torch.no_grad():
        est = codec(latents, torch.tensor([3])).bits.item()
    real = 8 * codec.compress(latents, 3)[0].num_bytes
    # The arithmetic coder is within a few bytes of the model's own estimate (per-stream flush).
    assert abs(real - est) < 0.1 * est + 8 * 2 * 2 * 3


def test_quality_index_out_of_range_is_rejected():
    codec = _codec()
    with pytest.raises(ValueError):
        codec.compress(torch.randn(1, 16, 1, 8, 8), codec.num_qualities)


def test_saved_codec_ships_its_integer_tables(tmp_path):
    codec = _codec()
    codec.save_pretrained(tmp_path)
    loaded = ContextualLatentCodec.from_pretrained(tmp_path)
    assert loaded.tables_ready()
    latents = torch.randn(1, 16, 2, 8, 8)
    data, l_hat, _ = codec.compress(latents, 1)
    assert torch.equal(loaded.decompress(data)[0], l_hat)


def test_explicit_training_noise_is_compressais_noise():
    """The trainer's noise source gives the likelihoods CompressAI's own noisy forward gives for the
    same noise (only where the noise comes from differs), and a split batch gets the rows' noise."""
    torch.manual_seed(2)
    hp = ConditionalHyperprior(y_channels=8, z_channels=8, channels=16).train()
    y, gain = torch.randn(4, 8, 8, 8) * 3, torch.full((4, 8, 1, 1), 1.5)
    drawn: list[torch.Tensor] = []

    def noise(shape: tuple[int, ...]) -> torch.Tensor:
        drawn.append(torch.rand(shape, generator=torch.Generator().manual_seed(len(drawn))) - 0.5)
        return drawn[-1]

    y_hat, lik = hp(y, gain, noise=noise)
    u_z, u_y = drawn  # z's noise, then y's
    eb, gc = hp.entropy_bottleneck, hp.gaussian_conditional
    c = u_z.shape[1]
    eb.quantize = lambda v, mode, means=None: v + u_z.transpose(0, 1).reshape(c, 1, -1)  # CompressAI's layout
    gc.quantize = lambda v, mode, means=None: v + u_y
    y_hat_ref, lik_ref = hp(y, gain)
    assert torch.equal(y_hat, y_hat_ref)
    assert torch.allclose(lik["z"], lik_ref["z"], rtol=0, atol=0) and torch.equal(lik["y"], lik_ref["y"])
    assert not torch.equal(lik["y"], hp(y, gain, noise=lambda s: torch.zeros(s))[1]["y"])  # the noise matters
    # Rows 2..3 of the batch with rows 2..3 of the noise: the same likelihoods as in the whole batch.
    del eb.quantize, gc.quantize
    _, half = hp(y[2:], gain[2:], noise=lambda s: (u_z if s[2:] == u_z.shape[2:] else u_y)[2:])
    assert torch.allclose(half["y"], lik["y"][2:], atol=1e-6) and torch.allclose(half["z"], lik["z"][2:], atol=1e-6)


def test_fit_quantiles_converges_them_and_only_them():
    """After a training moved z's density, fitting the quantiles (before ``update()``) brings the
    auxiliary loss to ≈ 0, touches no other weight, and codes z closer to its estimated rate."""
    import copy

    torch.manual_seed(1)
    codec = ContextualLatentCodec(channels=32, y_channels=16, z_channels=16, context_channels=16, num_qualities=4)
    ebs = [codec.intra_entropy.entropy_bottleneck, codec.inter_entropy.entropy_bottleneck]
    density = [p for eb in ebs for n, p in eb.named_parameters() if not n.endswith("quantiles")]
    opt = torch.optim.Adam(density, lr=1e-2)
    g = torch.Generator().manual_seed(0)
    for _ in range(300):  # z's density moves as in a training; the quantiles stay where they were
        loss = sum(-torch.log2(eb(3.0 + 4.0 * torch.randn(8, 16, 4, 4, generator=g))[1]).mean() for eb in ebs)
        opt.zero_grad()
        loss.backward()
        opt.step()
    before = float(codec.aux_loss())
    fitted = copy.deepcopy(codec)
    after = fitted.fit_quantiles()
    assert before > 100 and after < 0.01 * before
    for (name, a), b in zip(codec.state_dict().items(), fitted.state_dict().values(), strict=True):
        assert torch.equal(a, b) == (not name.endswith("quantiles")), name
    z = 3.0 + 4.0 * torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(5))
    real = []
    for model in (codec, fitted):
        model.update(force=True)
        eb = model.intra_entropy.entropy_bottleneck
        with torch.no_grad():
            estimate = -torch.log2(eb(z, training=False)[1]).sum().item()
        real.append(8 * len(eb.compress(z)[0]))
        medians = eb._get_medians()
        assert torch.equal(eb.decompress(eb.compress(z), z.shape[-2:]), torch.round(z - medians) + medians)
    assert real[1] < real[0] and abs(real[1] - estimate) < 0.02 * estimate
