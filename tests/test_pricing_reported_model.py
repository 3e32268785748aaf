# ruff: noqa: F811  (pytest passes the imported run_gateway fixture by parameter name)
"""A call whose target model has no price (an Azure deployment's name) is priced by the model
its answer names; a price for the target's model, listed or configured, always wins."""

from __future__ import annotations

from typing import Any

import pytest

from app.pricing import Price, PriceBook, shipped_prices
from app.usage import Usage
from tests.api.conftest import (  # noqa: F401  (run_gateway: the fixture, used by name)
    GatewayFactory,
    run_gateway,
    sim_config,
)

USAGE = Usage(prompt_tokens=1000, completion_tokens=100)
MESSAGES = [{"role": "user", "content": "Tell me about tides"}]


def test_unpriced_target_is_priced_by_the_reported_model() -> None:
    """A deployment name has no price: the reported gpt-4o-2024-08-06 is priced as gpt-4o."""
    book = PriceBook(shipped_prices())
    gpt4o = book.price("gpt-4o")
    assert gpt4o is not None
    assert book.cost("prod-chat", USAGE, reported="gpt-4o-2024-08-06") == \
        pytest.approx(gpt4o.cost(USAGE))
    assert book.cost("prod-chat", USAGE) is None
    assert book.cost("prod-chat", USAGE, reported="no-such-model") is None


def test_the_target_models_own_price_wins() -> None:
    """A listed or configured price for the target's model is used, whatever the answer says."""
    own = Price(input=1.0, output=2.0)
    book = PriceBook({**shipped_prices(), "prod-chat": own})
    assert book.cost("prod-chat", USAGE, reported="gpt-4o-2024-08-06") == \
        pytest.approx(own.cost(USAGE))
    mini = book.price("gpt-4o-mini")
    assert mini is not None
    assert book.cost("gpt-4o-mini", USAGE, reported="gpt-4o") == pytest.approx(mini.cost(USAGE))


def test_azures_gpt_35_names_take_gpt_3_5s_price() -> None:
    """Azure spells gpt-3.5 without the dot (``gpt-35-turbo``, ``gpt-35-turbo-0125``): priced
    as gpt-3.5-turbo, reported or as a target; a listed ``gpt-35-...`` price would win."""
    book = PriceBook(shipped_prices())
    turbo = book.price("gpt-3.5-turbo")
    assert turbo is not None
    assert book.price("gpt-35-turbo") == turbo and book.price("gpt-35-turbo-0125") == turbo
    assert book.cost("prod-chat", USAGE, reported="gpt-35-turbo") == \
        pytest.approx(turbo.cost(USAGE))
    own = Price(input=9.0, output=9.0)
    assert PriceBook({**shipped_prices(), "gpt-35-turbo": own}).price("gpt-35-turbo") == own
    assert book.price("gpt-35") is None


def azure_config(simulator: str, **pricing: Any) -> dict[str, Any]:
    raw = sim_config(simulator, azure={"targets": [{"provider": "az", "model": "prod-chat"}]})
    raw["providers"]["az"] = {"type": "azure_openai", "endpoint": simulator, "api_key": "k"}
    raw["pricing"] = pricing
    return raw


def expected_cost(usage: Any, price: Price) -> float:
    return price.cost(Usage(prompt_tokens=usage["prompt_tokens"],
                            completion_tokens=usage["completion_tokens"]))


def test_azure_call_is_priced_by_the_deployed_model(run_gateway: GatewayFactory,
                                                    simulator: str) -> None:
    """Through the gateway, an Azure deployment's call costs what its answer's model costs."""
    with run_gateway(azure_config(simulator)) as gw:
        answer = gw.http().post("/v1/chat/completions",
                                json={"model": "azure", "messages": MESSAGES})
    assert answer.status_code == 200
    body = answer.json()
    assert body["model"] == "gpt-4o-2024-08-06"
    gpt4o = PriceBook(shipped_prices()).price("gpt-4o")
    assert gpt4o is not None
    assert float(answer.headers["x-switchboard-cost-usd"]) == \
        pytest.approx(expected_cost(body["usage"], gpt4o), rel=1e-6)


def test_azure_deployment_priced_in_config_keeps_its_price(run_gateway: GatewayFactory,
                                                           simulator: str) -> None:
    """A ``pricing:`` entry under the deployment's name wins over the answer's model."""
    own = Price(input=1.0, output=2.0)
    with run_gateway(azure_config(simulator, **{"prod-chat": own.model_dump()})) as gw:
        answer = gw.http().post("/v1/chat/completions",
                                json={"model": "azure", "messages": MESSAGES})
    assert answer.status_code == 200
    assert float(answer.headers["x-switchboard-cost-usd"]) == \
        pytest.approx(expected_cost(answer.json()["usage"], own), rel=1e-6)
