"""Decode efficiency (bytes read per second of round against the GPU's data sheet and its measured bandwidth) and
compute efficiency (the weights' products per second against the dense bf16 peak)."""

from __future__ import annotations

import pytest

from harness.measure.roofline import (
    compute_efficiency,
    decode_efficiency,
    efficiency_figures,
    kv_bytes_per_position,
    matmul_parameters,
    peak_bandwidth,
    peak_bf16_flops,
    weight_bytes,
)
from harness.models.loading import LoadSpec, load_model
from harness.records import CaseRecord
from harness.report.tables import roofline_label, timing_label
from tests.test_report import make_record


@pytest.fixture(scope="module")
def model():
    return load_model(LoadSpec("embedded", "cpu", "float32")).model


def test_the_share_counts_every_pass_over_the_weights_and_every_cached_position_read(model):
    counters = {"forward_passes": 10, "kv_positions_read": 300, "generated_tokens": 40}
    efficiency = decode_efficiency(model, counters, 2.0, "NVIDIA H200", measured_bandwidth=4.0e12)
    read = 10 * weight_bytes(model) + 300 * kv_bytes_per_position(model)
    assert efficiency.tokens_per_second == 20
    assert efficiency.bytes_per_second == read / 2.0
    assert efficiency.share == pytest.approx(read / 2.0 / 4.8e12)
    assert efficiency.measured_share == pytest.approx(read / 2.0 / 4.0e12)
    assert efficiency.to_dict()["measured_share"] == efficiency.measured_share


def test_no_share_without_a_known_gpu_or_forward_passes_and_none_measured_without_a_measurement(model):
    assert decode_efficiency(model, {"forward_passes": 1}, 1.0, "Some Unknown GPU") is None
    assert decode_efficiency(model, {"forward_passes": 0}, 1.0, "NVIDIA H200") is None
    assert decode_efficiency(model, {"forward_passes": 1}, 1.0, "NVIDIA H200").measured_share is None
    assert peak_bandwidth("NVIDIA H100 PCIe") == 2.0e12  # the longer name wins over plain "h100"


def test_the_case_details_give_both_shares_and_records_from_before_the_measurement_still_read():
    record = make_record("eval[math|kv_cache=on]", kv_cache="on")
    record.metadata["decode"] = {"tokens_per_second": 700.0, "bytes_per_second": 1.8e12, "peak_bytes_per_second": 4.8e12,
                                 "gpu": "NVIDIA H200", "share": 0.375, "measured_bytes_per_second": 4.28e12,
                                 "measured_share": 1.8 / 4.28}
    assert "37.5% of the NVIDIA H200's 4.80 TB/s (42.1% of the 4.28 TB/s it read when measured)" in timing_label(record)
    for key in ("measured_bytes_per_second", "measured_share"):
        del record.metadata["decode"][key]
    assert timing_label(record).endswith("37.5% of the NVIDIA H200's 4.80 TB/s")


def test_compute_efficiency_counts_the_weights_products_of_every_processed_token_against_the_bf16_peak():
    model = load_model(LoadSpec("embedded", "cpu", "bfloat16")).model
    efficiency = compute_efficiency(model, {"processed_tokens": 1000}, 2.0, "NVIDIA H100 80GB HBM3")
    products = 2 * matmul_parameters(model) * 1000 / 2.0
    assert efficiency.flops_per_second == products and efficiency.share == pytest.approx(products / 989e12)
    # the input embedding is a lookup, and norms' vectors are no matrix: neither counts unless the output reuses it
    embedding = model.get_input_embeddings().weight
    matrices = sum(p.numel() for p in model.parameters() if p.dim() >= 2)
    tied = model.get_output_embeddings().weight is embedding
    assert matmul_parameters(model) == (matrices if tied else matrices - embedding.numel())
    assert peak_bf16_flops("NVIDIA H100 PCIe") == 756e12  # the longer name wins over plain "h100"


def test_a_pass_that_keeps_few_logits_counts_the_output_projection_for_those_alone():
    model = load_model(LoadSpec("embedded", "cpu", "bfloat16")).model
    head = model.get_output_embeddings().weight.numel()
    every = compute_efficiency(model, {"processed_tokens": 1000}, 1.0, "NVIDIA H100 80GB HBM3")
    kept = compute_efficiency(model, {"processed_tokens": 1000, "head_tokens": 100}, 1.0, "NVIDIA H100 80GB HBM3")
    assert every.flops_per_second - kept.flops_per_second == 2 * head * 900


def test_no_compute_share_off_a_known_gpu_outside_bf16_or_without_processed_tokens(model):
    assert compute_efficiency(model, {"processed_tokens": 10}, 1.0, "NVIDIA H100 80GB HBM3") is None  # fp32
    bf16 = load_model(LoadSpec("embedded", "cpu", "bfloat16")).model
    assert compute_efficiency(bf16, {"processed_tokens": 10}, 1.0, "Some Unknown GPU") is None
    assert compute_efficiency(bf16, {"forward_passes": 3}, 1.0, "NVIDIA H100 80GB HBM3") is None


def test_the_case_details_and_the_table_give_the_share_of_the_bf16_peak():
    record = make_record("scoring[gpqa|kv_cache=on]", kv_cache="on")
    record.metadata["compute"] = {"flops_per_second": 247.25e12, "peak_flops_per_second": 989e12,
                                  "gpu": "NVIDIA H100 80GB HBM3", "share": 0.25}
    assert "247.2 TFLOP/s, 25.0% of the NVIDIA H100 80GB HBM3's 989 TFLOP/s dense bf16" in timing_label(record)
    assert roofline_label(record) == "25% of bf16 peak"


def test_work_that_generates_tokens_is_read_against_bandwidth_and_work_that_generates_none_against_compute():
    model = load_model(LoadSpec("embedded", "cpu", "bfloat16")).model
    gpu = "NVIDIA H100 80GB HBM3"
    decode = {"forward_passes": 8, "generated_tokens": 8, "kv_positions_read": 64, "processed_tokens": 8}
    prefill = {"forward_passes": 1, "processed_tokens": 4096}
    assert set(efficiency_figures(model, decode, 1.0, gpu)) == {"decode"}
    assert set(efficiency_figures(model, prefill, 1.0, gpu)) == {"compute"}
    assert efficiency_figures(model, prefill, 1.0, "Some Unknown GPU") == {}


def test_a_phase_is_reported_with_its_share_of_the_round_and_its_own_rate():
    record = make_record("eval[decode-batch1|compile=on]", compile="on")  # rounds 2.0, 2.0, 3.0: median 2.0 s
    record.speed.phase_seconds = {"decode steps": [1.8, 1.7, 1.9]}
    record.metadata["phases"] = {"decode steps": {"decode": {
        "tokens_per_second": 724.0, "bytes_per_second": 1.8e12, "peak_bytes_per_second": 3.35e12,
        "gpu": "NVIDIA H100 80GB HBM3", "share": 1.8 / 3.35}}}
    assert ("phases, median per round: decode steps 1.8 s (90% of the round), decode 724 tok/s reading 1.80 TB/s, "
            "53.7% of the NVIDIA H100 80GB HBM3's 3.35 TB/s") in timing_label(record)
    assert roofline_label(record) == "steps alone 54%"
    # the record roundtrips through its stored form with its phases
    assert CaseRecord.from_dict(record.to_dict()).speed.phase_seconds == record.speed.phase_seconds
