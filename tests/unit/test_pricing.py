"""Unit tests of the Claude price table, call costs and the worst case reserved before a call."""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal

import pytest

from pipeline.errors import ConfigurationError
from pipeline.spend.pricing import (
    BATCH_DISCOUNT,
    PRICES,
    TokenUsage,
    cost_usd,
    price_for,
    worst_case_usd,
)

D = Decimal
M = 1_000_000


@pytest.mark.parametrize(
    ("model", "rates"),
    [
        ("claude-sonnet-5-5", ("2", "10", "2.50", "4", "0.10")),
        ("claude-opus-4-7", ("5", "25", "6.25", "10", "0.50")),
        ("claude-haiku-4-5", ("1", "5", "1.25", "2", "0.10")),
        ("claude-fable-5-1", ("10", "50", "12.50", "20", "0.25")),
        ("claude-mythos-5", ("10", "50", "12.50", "20", "1")),
    ],
)
def test_table_values(model: str, rates: tuple[str, ...]) -> None:
    p = PRICES[model]
    got = (
        p.input_per_mtok,
        p.output_per_mtok,
        p.cache_write_5m_per_mtok,
        p.cache_write_1h_per_mtok,
        p.cache_read_per_mtok,
    )
    assert got == tuple(D(r) for r in rates)
    assert p.source.startswith("https://platform.claude.com/docs/en/about-claude/pricing")
    assert p.checked == dt.date(2026, 11, 21)


def test_every_row_is_sourced_and_consistent() -> None:
    for name, p in PRICES.items():
        assert p.model == name
        assert p.source and p.checked
        assert p.cache_read_per_mtok < p.input_per_mtok < p.cache_write_5m_per_mtok
        assert p.cache_write_5m_per_mtok < p.cache_write_1h_per_mtok


def test_million_tokens_of_each_kind() -> None:
    model = "claude-sonnet-4-6"
    assert cost_usd(model, TokenUsage(M, 0)) == D("3")
    assert cost_usd(model, TokenUsage(0, M)) == D("15")
    assert cost_usd(model, TokenUsage(0, 0, cache_write_tokens=M)) == D("3.75")
    assert cost_usd(model, TokenUsage(0, 0, cache_write_1h_tokens=M)) == D("6")
    assert cost_usd(model, TokenUsage(0, 0, cache_read_tokens=M)) == D("0.30")
    mixed = TokenUsage(1000, 500, cache_write_tokens=2000, cache_read_tokens=10_000)
    # 1000*3 + 500*15 + 2000*3.75 + 10000*0.30 = 3000 + 7500 + 7500 + 3000 = 21000 per 1e6
    assert cost_usd(model, mixed) == D("0.021000")


def test_batch_is_half_of_every_rate() -> None:
    usage = TokenUsage(
        12_345, 6_789, cache_write_tokens=1_000, cache_read_tokens=50_000, cache_write_1h_tokens=7
    )
    for model in ("claude-opus-5", "claude-haiku-4-5", "claude-sonnet-5-5"):
        full = cost_usd(model, usage)
        half = cost_usd(model, usage, batch=True)
        assert abs(half - full * BATCH_DISCOUNT) <= D("0.000001")
    assert cost_usd("claude-opus-5", TokenUsage(M, M), batch=True) == D("15")  # (5 + 25) / 2


def test_haiku_5_5_long_prompt_tier() -> None:
    model = "claude-haiku-5-5"
    at = TokenUsage(100_000, 1_000)
    # 100000 * 0.10 + 1000 * 0.50 = 10500 per 1e6, standard rate at exactly the threshold.
    assert cost_usd(model, at) == D("0.010500")
    over = TokenUsage(100_001, 1_000)
    # Every token of the request at 5x, output included.
    assert cost_usd(model, over) == (
        (D(100_001) * D("0.10") + D(1000) * D("0.50")) * 5 / M
    ).quantize(D("0.000001"))
    # Cache reads and writes count towards the prompt length.
    split = TokenUsage(60_000, 0, cache_read_tokens=30_000, cache_write_tokens=10_001)
    assert cost_usd(model, split) == (
        (D(60_000) * D("0.10") + D(30_000) * D("0.01") + D(10_001) * D("0.125")) * 5 / M
    ).quantize(D("0.000001"))
    # Other models have no tier.
    assert cost_usd("claude-haiku-4-5", TokenUsage(200_000, 0)) == D("0.2")
    assert worst_case_usd(model, 100_001, 0) == (D(100_001) * D("0.20") * 5 / M).quantize(
        D("0.000001")
    )


def test_dated_ids_resolve_to_their_alias() -> None:
    assert price_for("claude-haiku-4-5-20251001") is PRICES["claude-haiku-4-5"]
    assert price_for("claude-sonnet-5-5") is PRICES["claude-sonnet-5-5"]
    assert cost_usd("claude-opus-4-5-20251101", TokenUsage(M, 0)) == D("5")


@pytest.mark.parametrize("model", ["gpt-4o", "claude-haiku-4-5-2025", "claude-sonnet-9"])
def test_unknown_model_is_a_configuration_error(model: str) -> None:
    with pytest.raises(ConfigurationError, match="claude-sonnet-5-5") as info:
        price_for(model)
    assert model in str(info.value)


def test_worst_case_uses_the_dearest_input_side_rate_and_rounds_up() -> None:
    # 1h cache write (4) beats input (2) on sonnet 5.5: 1000 * 4 + 100 * 10 = 5000 per 1e6.
    assert worst_case_usd("claude-sonnet-5-5", 1000, 100) == D("0.005")
    # 1 token of input at 4/MTok = 0.000004; one output token at 10/MTok = 0.00001.
    assert worst_case_usd("claude-sonnet-5-5", 1, 0) == D("0.000004")
    # 1 token at 0.20/MTok (haiku 5.5 1h write) is 0.0000002: rounded up, never down to zero.
    assert worst_case_usd("claude-haiku-5-5", 1, 0) == D("0.000001")
    assert cost_usd("claude-haiku-5-5", TokenUsage(1, 0)) == D("0")  # half-even down
    with pytest.raises(ValueError):
        worst_case_usd("claude-sonnet-5-5", -1, 10)


@pytest.mark.parametrize("batch", [False, True])
def test_worst_case_bounds_every_usage_within_it(batch: bool) -> None:
    rng = random.Random(20261121)
    models = sorted(PRICES)
    for _ in range(3000):
        model = rng.choice(models)
        input_tokens = rng.choice([0, 1, 7, 999, 50_000, 99_999, 100_000, 100_001, 400_000])
        input_tokens = max(0, input_tokens + rng.randint(-3, 3))
        max_tokens = rng.choice([0, 1, 16, 1024, 64_000])
        bound = worst_case_usd(model, input_tokens, max_tokens, batch=batch)
        # Split the prompt any way between plain input, 5m/1h cache writes and cache reads.
        cuts = sorted(rng.randint(0, input_tokens) for _ in range(3))
        parts = [cuts[0], cuts[1] - cuts[0], cuts[2] - cuts[1], input_tokens - cuts[2]]
        rng.shuffle(parts)
        usage = TokenUsage(
            input_tokens=parts[0],
            output_tokens=rng.randint(0, max_tokens),
            cache_write_tokens=parts[1],
            cache_write_1h_tokens=parts[2],
            cache_read_tokens=parts[3],
        )
        assert usage.prompt_tokens == input_tokens
        cost = cost_usd(model, usage, batch=batch)
        assert cost <= bound, (model, usage, batch, cost, bound)
    # And the bound is reached: all of it as 1h cache writes with every output token.
    usage = TokenUsage(0, 1024, cache_write_1h_tokens=5000)
    assert cost_usd("claude-opus-5", usage) == worst_case_usd("claude-opus-5", 5000, 1024)


def test_worst_case_prices_input_at_the_cache_ttl_the_request_asks_for() -> None:
    from decimal import Decimal

    from pipeline.spend.pricing import worst_case_usd

    # claude-sonnet-5-5: input 2, 5m write 2.50, 1h write 4, output 10 (USD per million tokens)
    assert worst_case_usd("claude-sonnet-5-5", 1_000_000, 0, cache_ttl=None) == Decimal("2")
    assert worst_case_usd("claude-sonnet-5-5", 1_000_000, 0, cache_ttl="5m") == Decimal("2.5")
    assert worst_case_usd("claude-sonnet-5-5", 1_000_000, 0) == Decimal("4")
    assert worst_case_usd("claude-sonnet-5-5", 0, 1_000_000, cache_ttl="5m") == Decimal("10")
    with pytest.raises(ValueError):
        worst_case_usd("claude-sonnet-5-5", 1, 1, cache_ttl="1d")
