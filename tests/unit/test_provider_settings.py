"""Settings for the providers beyond OpenAI, the seed rule, and the size capabilities
the catalogue declares for them."""

from __future__ import annotations

import pytest

from executor_service.capabilities import capability_problems, combined, plan_seed
from executor_service.config import ExecutorSettings
from executor_service.ports import NO_INPUTS
from imagegen import catalogue
from imagegen.validation import plan_violations
from imagegen_runtime.settings import ConfigError
from tests.support.plans import make_plan


def test_a_chain_mixes_every_kind_of_provider() -> None:
    settings = ExecutorSettings.from_env({
        "EXECUTOR_PROVIDER": "comfyui,gemini,openai,azure,offline",
        "EXECUTOR_GOOGLE_API_KEY": "g", "EXECUTOR_OPENAI_API_KEY": "o",
        "EXECUTOR_AZURE_OPENAI_ENDPOINT": "https://tables.openai.azure.com", "EXECUTOR_AZURE_OPENAI_DEPLOYMENT": "img",
        "EXECUTOR_COMFYUI_URL": "http://gpu-box:8188/",
    })
    assert settings.providers == ("comfyui", "gemini", "openai", "azure", "offline")
    assert settings.comfyui_url == "http://gpu-box:8188"
    assert "google_api_key" not in repr(settings) and "azure_openai_api_key" not in repr(settings)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"EXECUTOR_PROVIDER": "gemini"}, "EXECUTOR_GOOGLE_API_KEY"),
        ({"EXECUTOR_PROVIDER": "imagen", "EXECUTOR_GOOGLE_API_KEY": "g"}, "EXECUTOR_GOOGLE_VERTEX_PROJECT"),
        ({"EXECUTOR_PROVIDER": "azure", "EXECUTOR_AZURE_OPENAI_DEPLOYMENT": "d"}, "EXECUTOR_AZURE_OPENAI_ENDPOINT"),
        ({"EXECUTOR_PROVIDER": "comfyui", "EXECUTOR_COMFYUI_WORKFLOW": "/nowhere/flow.json"}, "EXECUTOR_COMFYUI_WORKFLOW"),
        ({"EXECUTOR_PROVIDER": "comfyui", "EXECUTOR_COMFYUI_URL": "gpu-box:8188"}, "EXECUTOR_COMFYUI_URL"),
        ({"EXECUTOR_PROVIDER": "midjourney"}, "EXECUTOR_PROVIDER"),
    ],
)
def test_a_provider_missing_what_it_needs_is_refused_at_start(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        ExecutorSettings.from_env(env)


def test_imagen_on_vertex_needs_no_key() -> None:
    settings = ExecutorSettings.from_env({"EXECUTOR_PROVIDER": "imagen", "EXECUTOR_GOOGLE_VERTEX_PROJECT": "p"})
    assert settings.google_vertex_location == "us-central1"


@pytest.mark.parametrize("seed", ["-1", "abc", "1.5", str(catalogue.MAX_SEED + 1), "٣"])
def test_a_seed_must_be_a_decimal_integer_in_range(seed: str) -> None:
    (violation,) = plan_violations(make_plan(metadata={"seed": seed}))
    assert violation.field == "plan.metadata['seed']"


def test_a_seed_of_more_digits_than_python_converts_is_a_violation_not_an_error() -> None:
    fields = {v.field for v in plan_violations(make_plan(metadata={"seed": "1" * 5000}))}
    assert "plan.metadata['seed']" in fields
    assert plan_violations(make_plan(metadata={"seed": "0" * 20 + "7"})) == []  # leading zeros: still 7


def test_a_valid_seed_is_read_from_the_plan() -> None:
    plan = make_plan(metadata={"seed": str(catalogue.MAX_SEED)})
    assert plan_violations(plan) == [] and plan_seed(plan) == catalogue.MAX_SEED
    assert plan_seed(make_plan()) is None


def test_declared_sizes_and_size_steps_are_checked() -> None:
    gemini = catalogue.provider_capabilities("gemini", "gemini-2.5-flash-image")
    comfyui = catalogue.provider_capabilities("comfyui", "any.safetensors")
    (problem,) = capability_problems(gemini, make_plan(size="1000x1000"), NO_INPUTS)
    assert problem.field == "plan.size" and "1344x768" in problem.description
    assert capability_problems(gemini, make_plan(size="1344x768"), NO_INPUTS) == []
    (problem,) = capability_problems(comfyui, make_plan(size="1020x1020"), NO_INPUTS)
    assert "multiples of 8" in problem.description
    # A chain renders what any of its providers renders.
    either = combined([gemini, comfyui])
    assert either.sizes is None and either.size_step == 1
    assert combined([gemini, catalogue.provider_capabilities("imagen", "imagen-4")]).sizes == (
        catalogue.GEMINI_SIZES | catalogue.IMAGEN_SIZES
    )


def test_a_model_of_no_declared_family_gets_the_most_cautious_capabilities() -> None:
    assert catalogue.provider_capabilities("gemini", "veo-3") == catalogue.ProviderCapabilities()
