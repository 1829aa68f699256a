"""pylockdep's version, written only here: the package metadata reads it (``pyproject.toml``'s
dynamic version) and so do ``pylockdep.__version__`` and the splats' banner."""

__version__ = "0.1.0"
