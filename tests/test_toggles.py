"""The toggle registry: which pipelines read each toggle, and the refusal of a case that sweeps one its pipeline ignores."""

from __future__ import annotations

import pytest

from harness import toggles
from harness.pipelines.detection import DetectionSettings
from harness.pipelines.eval import EvalSettings
from harness.pipelines.scoring import ScoringSettings
from harness.pipelines.search import SearchSettings

# Each pipeline's settings built from a variant; quantization (load time) and attention (set on the loaded model)
# reach every pipeline through the model, not through these.
_SETTINGS = {
    "eval": lambda variant: EvalSettings.from_variant(variant, max_new_tokens=8),
    "search": lambda variant: SearchSettings.from_variant(variant, max_new_tokens=8),
    "scoring": ScoringSettings.from_variant,
    "detection": DetectionSettings.from_variant,
}
_THROUGH_THE_MODEL = {"attention", "quantization"}


@pytest.mark.parametrize("name", sorted(set(toggles.TOGGLES) - _THROUGH_THE_MODEL))
def test_a_toggle_is_listed_for_exactly_the_pipelines_whose_settings_it_changes(name):
    toggle = toggles.get_toggle(name)
    optimized = {name: toggle.optimized, **({"kv_cache": "on"} if name == "compile" else {})}
    reference = {**optimized, name: toggle.reference}
    changes = {pipeline for pipeline, build in _SETTINGS.items() if build(optimized) != build(reference)}
    assert changes == toggle.pipelines


def test_toggles_read_through_the_model_reach_every_pipeline():
    for name in _THROUGH_THE_MODEL:
        assert toggles.get_toggle(name).pipelines == set(_SETTINGS)


def test_a_toggle_the_pipeline_reads_passes():
    toggles.check_applicable("test_eval", "eval", {"kv_cache": ["on"], "batching": ["dynamic"]})
    toggles.check_applicable("test_detection", "detection", {"topk": ["50"], "attention": ["sdpa"]})


def test_a_toggle_the_pipeline_ignores_is_refused_naming_case_toggle_and_readers():
    expected = ("test_x sweeps kv_cache, which the detection pipeline does not read "
                "(kv_cache is read by: eval, scoring, search): drop it from the case's toggles")
    with pytest.raises(toggles.ToggleError) as refused:
        toggles.check_applicable("test_x", "detection", {"topk": ["50"], "kv_cache": ["on"]})
    assert str(refused.value) == expected


def test_the_refusal_names_the_field_it_came_from():
    with pytest.raises(toggles.ToggleError) as refused:
        toggles.check_applicable("test_s", "search", {"topk": ["50"]}, "gpu_toggles")
    assert str(refused.value) == ("test_s sweeps topk, which the search pipeline does not read "
                                  "(topk is read by: detection, scoring): drop it from the case's gpu_toggles")


def test_a_users_own_pipeline_is_not_checked_but_unknown_toggles_still_are():
    toggles.check_applicable("test_mine", "my_pipeline", {"topk": ["50"], "kv_cache": ["on"]})
    with pytest.raises(toggles.ToggleError, match="unknown toggle 'turbo'"):
        toggles.check_applicable("test_eval", "eval", {"turbo": ["on"]})
