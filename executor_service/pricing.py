"""What an image cost: a price table applied to the usage a provider reports. Pure.

Prices are in US dollars: per million tokens for providers that report token usage (the
OpenAI images API: https://platform.openai.com/docs/pricing, "Image generation"), and
per image for the rest. Estimates are in micros (millionths of a dollar, as
ProviderInfo.estimated_cost_micros), rounded to the nearest.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from types import MappingProxyType

from executor_service.ports import Usage

# A price table has at most this many models: it is configuration, not data.
MAX_PRICED_MODELS = 256
# The largest estimate given: a finite price times the usage a provider reports (up to
# 2**53 tokens) may pass int64, or float's range; what the executor reads back is below 2**62.
MAX_ESTIMATE_MICROS = 2**62 - 1


@dataclass(frozen=True)
class Price:
    """One model's prices in USD: per million input text tokens, input image tokens and
    output tokens, and per image (for a provider that reports no usage)."""

    input_per_million: float = 0.0
    input_image_per_million: float = 0.0
    output_per_million: float = 0.0
    per_image: float = 0.0


class PriceTable:
    """Prices by "provider/model" (or "model" alone, for any provider). Empty: every
    estimate is 0."""

    def __init__(self, prices: Mapping[str, Price] | None = None) -> None:
        self._prices = MappingProxyType(dict(prices or {}))

    def __len__(self) -> int:
        return len(self._prices)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PriceTable) and dict(self._prices) == dict(other._prices)

    def __hash__(self) -> int:
        return hash(frozenset(self._prices.items()))

    def __repr__(self) -> str:
        return f"PriceTable({dict(self._prices)!r})"

    def price(self, provider: str, model: str) -> Price | None:
        return self._prices.get(f"{provider}/{model}") or self._prices.get(model)

    def estimate_micros(self, provider: str, model: str, usage: Usage | None) -> int:
        """The estimated cost of one image in USD micros, at most MAX_ESTIMATE_MICROS; 0 when
        the table has no price."""
        price = self.price(provider, model)
        if price is None:
            return 0
        dollars_per_million = price.per_image * 1_000_000
        if usage is not None:
            text_tokens = max(usage.input_tokens - usage.input_image_tokens, 0)
            # USD per 1M tokens times tokens is micros.
            dollars_per_million += (
                text_tokens * price.input_per_million
                + usage.input_image_tokens * price.input_image_per_million
                + usage.output_tokens * price.output_per_million
            )
        return round(dollars_per_million) if dollars_per_million < MAX_ESTIMATE_MICROS else MAX_ESTIMATE_MICROS

    @classmethod
    def from_json(cls, text: str) -> PriceTable:
        """{"openai/gpt-image-2": {"input_per_million": 5, "output_per_million": 40}, ...};
        ValueError saying what is wrong otherwise."""
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not JSON ({exc.msg})") from None
        except RecursionError:
            raise ValueError("not JSON (nested deeper than the parser goes)") from None
        if not isinstance(raw, dict):
            raise ValueError('expected an object of "provider/model" or "model" to prices')
        if len(raw) > MAX_PRICED_MODELS:
            raise ValueError(f"more than {MAX_PRICED_MODELS} models")
        names = {f.name for f in fields(Price)}
        prices: dict[str, Price] = {}
        for model, entry in raw.items():
            if not isinstance(entry, dict) or not set(entry) <= names:
                raise ValueError(f"{model!r}: expected an object with some of {', '.join(sorted(names))}")
            values = {}
            for name, value in entry.items():
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                    raise ValueError(f"{model!r}.{name}: expected a price of at least 0")
                values[name] = float(value)
            prices[model] = Price(**values)
        return cls(prices)
