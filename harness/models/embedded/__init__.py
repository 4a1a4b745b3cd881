"""The embedded reference model and its sibling: trained by the project, shipped with it."""

from pathlib import Path

MODELS_DIR = Path(__file__).parent / "models"
REFERENCE_MODEL = MODELS_DIR / "reference"
SIBLING_MODEL = MODELS_DIR / "sibling"
