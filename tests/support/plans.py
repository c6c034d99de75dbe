"""Valid plans for tests: one place that knows what a complete plan needs."""

from __future__ import annotations

from functools import partial
from typing import Any

from imagegen.v1.image_plan_pb2 import ImageGenerationPlan, ImageType


def make_plan(**fields: Any) -> ImageGenerationPlan:
    """A valid plan (no plan_id): a painterly 1024x1024 owlbear for session table-3, with fields changed."""
    defaults: dict[str, Any] = dict(
        enhanced_prompt="An owlbear in a moonlit glade", image_type=ImageType.IMAGE_TYPE_CREATURE,
        style="painterly", size="1024x1024", session_id="table-3",
    )
    return ImageGenerationPlan(**{**defaults, **fields})


def plan_maker(**defaults: Any) -> partial[ImageGenerationPlan]:
    """make_plan with other defaults, for a module whose tests share them."""
    return partial(make_plan, **defaults)
