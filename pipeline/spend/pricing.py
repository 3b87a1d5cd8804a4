"""Claude prices in USD per million tokens, and what a call costs or may cost at most.

Source of every row: Anthropic's pricing page, https://platform.claude.com/docs/en/about-claude/pricing
and the model overview pages, checked 2026-11-21. Money is :class:`~decimal.Decimal` throughout.

- Prompt-cache writes are priced per cache lifetime (5 minutes or 1 hour) and cost more than plain
  input; cache reads cost less.
- The Message Batches API bills every rate (input, output, cache) at 50% (:data:`BATCH_DISCOUNT`).
- ``claude-haiku-5-5`` has a long-prompt tier: a request whose prompt (input + cache reads + cache
  writes) passes 100,000 tokens has every token of it, output included, billed at 5x.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_HALF_EVEN, Decimal

from pipeline.errors import ConfigurationError, InvalidValueError

PRICING_SOURCE = "https://platform.claude.com/docs/en/about-claude/pricing"
PRICES_CHECKED = dt.date(2026, 11, 21)
#: Billing in the Message Batches API: half of every standard rate (same source).
BATCH_DISCOUNT = Decimal("0.5")
#: Costs are kept to the micro-dollar, the scale of the ``numeric(12, 6)`` money columns.
USD_QUANTUM = Decimal("0.000001")
_MILLION = Decimal(1_000_000)
_DATED_SUFFIX = re.compile(r"-\d{8}$")


@dataclass(frozen=True)
class ModelPrice:
    """One model's standard (non-batch) rates in USD per million tokens.

    ``long_prompt_threshold``: when a request's prompt tokens (input + cache reads + cache
    writes) exceed it, every token of the request is billed at ``long_prompt_multiplier``.
    ``None``: the model has no such tier.
    """

    model: str
    input_per_mtok: Decimal
    output_per_mtok: Decimal
    cache_write_5m_per_mtok: Decimal
    cache_write_1h_per_mtok: Decimal
    cache_read_per_mtok: Decimal
    source: str
    checked: dt.date
    long_prompt_threshold: int | None = None
    long_prompt_multiplier: Decimal = Decimal(1)

    @property
    def max_input_side_per_mtok(self) -> Decimal:
        """The dearest rate a prompt token can be billed at (a cache write beats input)."""
        return max(self.input_per_mtok, self.cache_write_5m_per_mtok, self.cache_write_1h_per_mtok)


def _row(
    model: str,
    rates: tuple[str, str, str, str, str],
    *,
    source: str = PRICING_SOURCE,
    long_prompt_threshold: int | None = None,
    long_prompt_multiplier: str = "1",
) -> ModelPrice:
    inp, out, write_5m, write_1h, read = (Decimal(r) for r in rates)
    return ModelPrice(
        model=model,
        input_per_mtok=inp,
        output_per_mtok=out,
        cache_write_5m_per_mtok=write_5m,
        cache_write_1h_per_mtok=write_1h,
        cache_read_per_mtok=read,
        source=source,
        checked=PRICES_CHECKED,
        long_prompt_threshold=long_prompt_threshold,
        long_prompt_multiplier=Decimal(long_prompt_multiplier),
    )


# (input, output, 5m cache write, 1h cache write, cache read), USD per million tokens.
_OPUS_4X = ("5", "25", "6.25", "10", "0.50")
_FABLE_MYTHOS_5_1 = ("10", "50", "12.50", "20", "0.25")
_FABLE_MYTHOS_5 = ("10", "50", "12.50", "20", "1")
_SONNET_4X = ("3", "15", "3.75", "6", "0.30")

_ROWS = (
    # Cache reads were cut from 0.20 to 0.10 on 2026-10-07 (pricing page changelog).
    _row(
        "claude-sonnet-5-5",
        ("2", "10", "2.50", "4", "0.10"),
        source=f"{PRICING_SOURCE} (cache reads 0.20 -> 0.10 on 2026-10-07)",
    ),
    _row("claude-sonnet-5", ("2", "10", "2.50", "4", "0.20")),
    _row("claude-opus-5-5", ("4", "20", "5", "8", "0.40")),
    _row("claude-opus-5", _OPUS_4X),
    _row("claude-opus-4-8", _OPUS_4X),
    _row("claude-opus-4-7", _OPUS_4X),
    _row("claude-opus-4-6", _OPUS_4X),
    _row("claude-opus-4-5", _OPUS_4X),
    _row("claude-fable-5-1", _FABLE_MYTHOS_5_1),
    _row("claude-mythos-5-1", _FABLE_MYTHOS_5_1),
    _row("claude-fable-5", _FABLE_MYTHOS_5),
    _row("claude-mythos-5", _FABLE_MYTHOS_5),
    _row(
        "claude-haiku-5-5",
        ("0.10", "0.50", "0.125", "0.20", "0.01"),
        long_prompt_threshold=100_000,
        long_prompt_multiplier="5",
    ),
    _row("claude-haiku-4-5", ("1", "5", "1.25", "2", "0.10")),
    _row("claude-sonnet-4-6", _SONNET_4X),
    _row("claude-sonnet-4-5", _SONNET_4X),
)

#: Every priced model by alias (a dated id such as ``claude-haiku-4-5-20251001`` resolves to its
#: alias in :func:`price_for`).
PRICES: dict[str, ModelPrice] = {row.model: row for row in _ROWS}


def price_for(model: str) -> ModelPrice:
    """The price row of ``model``; a dated id (``<alias>-YYYYMMDD``) resolves to its alias.

    Raises:
        ConfigurationError: the model is not in :data:`PRICES` (the message lists the known ones).
    """
    found = PRICES.get(model) or PRICES.get(_DATED_SUFFIX.sub("", model))
    if found is None:
        known = ", ".join(sorted(PRICES))
        raise ConfigurationError(f"no price for model {model!r}; known models: {known}")
    return found


@dataclass(frozen=True)
class TokenUsage:
    """Tokens of one request as the API reports them.

    ``input_tokens`` are uncached prompt tokens; ``cache_write_tokens`` are 5-minute cache writes,
    ``cache_write_1h_tokens`` 1-hour ones; ``cache_read_tokens`` cache hits.
    """

    input_tokens: int
    output_tokens: int
    cache_write_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_1h_tokens: int = 0

    @property
    def prompt_tokens(self) -> int:
        """Every prompt token: input, cache reads and both kinds of cache writes."""
        return (
            self.input_tokens
            + self.cache_read_tokens
            + self.cache_write_tokens
            + self.cache_write_1h_tokens
        )


def _multiplier(price: ModelPrice, prompt_tokens: int, batch: bool) -> Decimal:
    factor = BATCH_DISCOUNT if batch else Decimal(1)
    if price.long_prompt_threshold is not None and prompt_tokens > price.long_prompt_threshold:
        factor *= price.long_prompt_multiplier
    return factor


def cost_usd(model: str, usage: TokenUsage, *, batch: bool = False) -> Decimal:
    """What a request cost in USD, rounded half-even to 0.000001.

    Each token kind at its rate (:data:`PRICES`); the long-prompt tier when the prompt passes the
    model's threshold; half price with ``batch`` (Message Batches API).

    Raises:
        ConfigurationError: unknown model.
    """
    price = price_for(model)
    raw = (
        usage.input_tokens * price.input_per_mtok
        + usage.output_tokens * price.output_per_mtok
        + usage.cache_write_tokens * price.cache_write_5m_per_mtok
        + usage.cache_write_1h_tokens * price.cache_write_1h_per_mtok
        + usage.cache_read_tokens * price.cache_read_per_mtok
    )
    total = raw * _multiplier(price, usage.prompt_tokens, batch) / _MILLION
    return total.quantize(USD_QUANTUM, rounding=ROUND_HALF_EVEN)


def worst_case_usd(
    model: str, input_tokens: int, max_tokens: int, *, batch: bool = False,
    cache_ttl: str | None = "1h",
) -> Decimal:  # fmt: skip
    """The most a request can cost in USD: the amount to reserve before sending it.

    Every one of the ``input_tokens`` prompt tokens at the dearest input-side rate the request
    can be billed (plain input, or a cache write of the longest TTL the request asks for:
    ``cache_ttl`` ``"5m"``, ``"1h"`` (the default, safe for any request) or ``None`` for a
    request without ``cache_control``) plus ``max_tokens`` at the output rate, with the
    long-prompt tier when ``input_tokens`` passes the threshold (the tier is by prompt length) and
    half price with ``batch``. Rounded up (ceiling) to 0.000001 so it is never below
    :func:`cost_usd` of any usage with at most these tokens.

    Raises:
        ConfigurationError: unknown model.
        InvalidValueError: a negative token count.
    """
    if input_tokens < 0 or max_tokens < 0:
        raise InvalidValueError(f"token counts must be >= 0, got {input_tokens=} {max_tokens=}")
    price = price_for(model)
    if cache_ttl == "1h":
        input_rate = price.max_input_side_per_mtok
    elif cache_ttl == "5m":
        input_rate = max(price.input_per_mtok, price.cache_write_5m_per_mtok)
    elif cache_ttl is None:
        input_rate = price.input_per_mtok
    else:
        raise InvalidValueError(f"cache_ttl must be '5m', '1h' or None, got {cache_ttl!r}")
    raw = input_tokens * input_rate + max_tokens * price.output_per_mtok
    total = raw * _multiplier(price, input_tokens, batch) / _MILLION
    return total.quantize(USD_QUANTUM, rounding=ROUND_CEILING)
