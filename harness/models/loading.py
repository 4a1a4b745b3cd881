"""Model specs + load-time toggles -> loaded models, a per-session cache, and the environment fingerprint."""

from __future__ import annotations

import functools
import hashlib
import logging
import re
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from harness.models import profiles
from harness.models.embedded import REFERENCE_MODEL, SIBLING_MODEL
from harness.models.placement import Placement, layout_of, offloaded_modules
from harness.toggles import unavailable_reason

EMBEDDED_MODELS = {"embedded": REFERENCE_MODEL, "embedded-reference": REFERENCE_MODEL, "embedded-sibling": SIBLING_MODEL}


class ModelLoadError(RuntimeError):
    """A model that cannot be loaded, with what to change."""


@dataclass(frozen=True)
class LoadSpec:
    """Everything that decides which weights end up in memory; the cache key."""

    source: str  # "embedded", "embedded-sibling", or a local model directory
    device: str  # "cpu" or "cuda"
    dtype: str  # "float32" / "bfloat16" / "float16"
    quantization: str = "none"  # "none" / "int8" / "nf4"
    # compile=on gets a model of its own: torch.compile keeps its graphs on the model it compiled
    compile: bool = False
    # A separately loaded copy of the same weights (a scoring twin): its own cache entry, so its own module objects.
    copy: bool = False
    # Opt-ins, off unless the user asks (--bench-trust-remote-code, --bench-allow-pickle-weights): a model
    # directory's Python code, and pickled weights, both run arbitrary code when loaded.
    trust_remote_code: bool = False
    allow_pickle_weights: bool = False
    # Spread over several GPUs by accelerate's device map (--bench-device-map); None: the whole model on `device`.
    placement: Placement | None = None


@dataclass
class LoadedModel:
    spec: LoadSpec
    model: torch.nn.Module
    tokenizer: object
    path: Path
    attention: str = "eager"  # the implementation it loaded with: cases that do not sweep attention get it back

    def use_attention(self, variant: dict[str, str]) -> None:
        """The variant's attention implementation, or the loaded one: one case's choice must not leak into the next."""
        self.model.set_attn_implementation(variant.get("attention", self.attention))


def resolve_device(requested: str) -> str:
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("--bench-device cuda was requested but torch sees no CUDA device; use --bench-device cpu or auto")
    if requested not in ("cpu", "cuda"):
        raise ModelLoadError(f"--bench-device must be auto, cpu or cuda, got {requested!r}")
    return requested


def default_dtype(device: str) -> str:
    return "bfloat16" if device == "cuda" else "float32"


def model_path(source: str) -> Path:
    if source in EMBEDDED_MODELS:
        return EMBEDDED_MODELS[source]
    if profiles.is_profile(source):
        profiles.profile_name(source)  # an unknown profile is named here, before any work
        raise ModelLoadError(f"--bench-model {source} is built, not read from a directory")
    path = Path(source).expanduser()
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"--bench-model {source}: no config.json there; give a local Hugging Face model directory or 'embedded'")
    return path


def model_id(source: str) -> str:
    """A stable, path-free name for baselines: 'embedded-reference', 'random-<profile>', or a model directory's slug
    and the first 8 hex digits of its checkpoint hash: two checkpoints in two `.../final` folders are two models."""
    if source in EMBEDDED_MODELS:
        return "embedded-reference" if source == "embedded" else source
    if profiles.is_profile(source):
        return "random-" + profiles.profile_name(source)
    slug = re.sub(r"[^a-z0-9]+", "-", Path(source).expanduser().resolve().name.lower()).strip("-") or "model"
    return f"{slug}-{checkpoint_hash(source)[:8]}"


# The files that make a checkpoint what it is: its weights, its config and its tokenizer.
_CHECKPOINT_FILES = ("*.safetensors", *("*.bin", "*.pt", "*.pth", "*.ckpt"), "config.json", "generation_config.json",
                     "tokenizer*", "special_tokens_map.json", "vocab.*", "merges.txt", "*.model")


@functools.cache  # once per process: a 1B checkpoint's 2.5 GB hash in about 2 s
def checkpoint_hash(source: str) -> str:
    """SHA-256 over the names and bytes of a model's weight, config and tokenizer files (the embedded models' shipped
    directories too); "" for a speed profile, whose weights are drawn from a seed, not read."""
    if profiles.is_profile(source):
        return ""
    directory = EMBEDDED_MODELS.get(source) or Path(source).expanduser().resolve()
    digest = hashlib.sha256()
    files = sorted({f for pattern in _CHECKPOINT_FILES for f in Path(directory).glob(pattern) if f.is_file()})
    for path in files:
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()


def _quantization_config(quantization: str, dtype: torch.dtype):
    from transformers import BitsAndBytesConfig

    if quantization == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    # The defaults are fp4 with fp32 compute: say nf4 and the compute dtype explicitly.
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype)


PICKLE_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.ckpt")


def check_weight_files(path: Path, allow_pickle_weights: bool) -> None:
    """Refuse a directory whose weights are pickles, unless the user opted in: unpickling runs code."""
    if any(path.glob("*.safetensors")) or allow_pickle_weights:
        return
    pickles = sorted(f.name for pattern in PICKLE_WEIGHTS for f in path.glob(pattern))
    found = f"holds only pickled weights ({', '.join(pickles)})" if pickles else "holds no *.safetensors weights"
    raise ModelLoadError(
        f"--bench-model {path} {found}; convert them to safetensors (model.save_pretrained(dir, "
        "safe_serialization=True) in a trusted environment), or opt in with --bench-allow-pickle-weights "
        "if you trust the file: unpickling runs arbitrary code"
    )


def _load_error(path: Path, spec: LoadSpec, error: Exception) -> ModelLoadError:
    text = str(error)
    if "trust_remote_code" in text and not spec.trust_remote_code:
        return ModelLoadError(f"--bench-model {path} needs the Python code shipped in the model directory; read it, "
                              f"then opt in with --bench-trust-remote-code ({text.splitlines()[0]})")
    if "Unrecognized configuration class" in text:
        return ModelLoadError(f"--bench-model {path} is not a causal language model ({text.splitlines()[0]}); "
                              "the pipelines need a model that AutoModelForCausalLM loads")
    return ModelLoadError(f"cannot load {path} as a causal LM: {text}")


def _ensure_pad_token(tokenizer, path: Path) -> None:
    """Decoder-only models often ship without a pad token; padding with EOS is masked out anyway."""
    if tokenizer.pad_token is not None:
        return
    if tokenizer.eos_token is None:
        raise ModelLoadError(f"the tokenizer of {path} has neither a pad token nor an EOS token, so batches cannot be "
                             "padded; set pad_token (or eos_token) in its tokenizer_config.json")
    tokenizer.pad_token = tokenizer.eos_token


def load_model(spec: LoadSpec) -> LoadedModel:
    """Load through `from_pretrained` from a local directory: safetensors only, no remote code (unless opted in).
    A speed profile (`random:<arch>`) is built with seeded random weights; quantized, it is written once
    as safetensors and loaded back, since bitsandbytes quantizes while loading."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # A case's own quantized load (a scoring panel's nf4 copy) is not a toggle that could skip it: it fails saying
    # what to install, rather than with transformers' ImportError from inside from_pretrained.
    missing = unavailable_reason({"quantization": spec.quantization}, spec.device)
    if missing is not None:
        raise ModelLoadError(missing)
    if profiles.is_profile(spec.source):
        try:
            # Built in place on one device; a device map (like bitsandbytes) needs from_pretrained, so a split or
            # quantized profile goes through a copy written once to disk.
            if spec.quantization == "none" and spec.placement is None:
                model = profiles.random_model(spec.source, spec.device, getattr(torch, spec.dtype))
                tokenizer = profiles.build_tokenizer(model.config.vocab_size)
                return LoadedModel(spec, model, tokenizer, Path(spec.source), model.config._attn_implementation or "eager")
        except profiles.ProfileError as error:
            raise ModelLoadError(str(error)) from None
        spec_on_disk = replace(spec, source=str(profiles.saved_profile(spec.source, spec.dtype)))
        return replace(load_model(spec_on_disk), spec=spec)
    path = model_path(spec.source)
    check_weight_files(path, spec.allow_pickle_weights)
    dtype = getattr(torch, spec.dtype)
    kwargs: dict = {"dtype": dtype, "local_files_only": True, "trust_remote_code": spec.trust_remote_code,
                    "use_safetensors": None if spec.allow_pickle_weights else True}
    kwargs.update(_placement_kwargs(spec, dtype))
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=spec.trust_remote_code,
                                                  padding_side="left")
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except (OSError, ValueError, KeyError) as error:
        raise _load_error(path, spec, error) from error
    if "device_map" not in kwargs:  # a dispatched model stays where accelerate put it
        model = model.to(spec.device)
    _check_layout(model, spec)
    model.eval()
    _ensure_pad_token(tokenizer, path)
    return LoadedModel(spec, model, tokenizer, path, attention=model.config._attn_implementation or "eager")


def _placement_kwargs(spec: LoadSpec, dtype: torch.dtype) -> dict:
    """from_pretrained's arguments for where the weights go: a device map (with a memory limit per GPU) when
    the session spreads the model, the device itself for bitsandbytes (it quantizes while loading), else none."""
    kwargs: dict = {}
    if spec.quantization != "none":
        _silence_bitsandbytes()
        kwargs["quantization_config"] = _quantization_config(spec.quantization, dtype)
        kwargs["device_map"] = spec.device
    if spec.placement is not None:
        kwargs["device_map"] = spec.placement.device_map
        max_memory = spec.placement.max_memory_dict()
        if max_memory is not None:
            kwargs["max_memory"] = max_memory
    return kwargs


def _check_layout(model: torch.nn.Module, spec: LoadSpec) -> None:
    """Refuse a device map that offloaded layers to CPU or disk: its rounds would time the bus."""
    layout = layout_of(model) if spec.placement is not None else None
    if layout and offloaded_modules(layout):
        raise ModelLoadError(f"--bench-device-map {spec.placement.device_map} put {offloaded_modules(layout)} module(s) "
                             f"of {spec.source} off the GPUs ({layout}); the GPUs given cannot hold it: raise "
                             "--bench-max-memory, give more GPUs, or quantize")


def _silence_bitsandbytes() -> None:
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message="MatMul8bitLt")


class ModelCache:
    """One loaded model per LoadSpec for the whole session: run-time toggles never reload."""

    def __init__(self) -> None:
        self._models: dict[LoadSpec, LoadedModel] = {}

    def get(self, spec: LoadSpec) -> LoadedModel:
        if spec not in self._models:
            self._models[spec] = load_model(spec)
        return self._models[spec]
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def weights_summary(model: torch.nn.Module) -> dict:
    """What was loaded, so that a baseline of one model or load never silently judges another: parameter
    count, bytes of weights and buffers, the dtypes held, and the quantization method."""
    config = getattr(getattr(model, "config", None), "quantization_config", None)
    method = "none"
    if config is not None:
        method = getattr(config, "quant_method", None) or (config.get("quant_method") if isinstance(config, dict) else None)
        method = getattr(method, "value", method)  # transformers' QuantizationMethod enum
        if getattr(config, "load_in_4bit", False):
            method = f"{method}-{getattr(config, 'bnb_4bit_quant_type', '4bit')}"
        elif getattr(config, "load_in_8bit", False):
            method = f"{method}-int8"
        method = str(method)
    tensors = [*model.parameters(), *model.buffers()]
    return {"parameters": int(sum(t.numel() for t in model.parameters())),
            "bytes": int(sum(t.numel() * t.element_size() for t in tensors)),
            "dtypes": sorted({str(t.dtype).removeprefix("torch.") for t in tensors}),
            "quantization": method}


