"""msconvert: batch converter from motion-capture corpora to muscle-driven emulations."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("msconvert")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
