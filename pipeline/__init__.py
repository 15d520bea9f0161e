"""b12screen: population screening for vitamin B12 deficiency from routine lab extracts.

The package reads as the flow of a run: ``read`` -> ``validate`` -> ``harmonise`` ->
``classify`` (pure rule functions in ``pipeline.rules``) -> ``write``; ``cli`` is a thin shell.
"""

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

try:
    __version__ = version("b12screen")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+source"

#: The project root holding ``configs/`` (the package is installed editable from it).
PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = PROJECT_ROOT / "configs"
