"""headreport: weights-based reports on attention heads (HTML site, PDF, or inline in a notebook).

    import headreport
    rep = headreport.analyze(model, heads=["10.7"])   # in memory; displays inline in Jupyter
    rep.save("out")                                   # artifacts + site + PDF

``headreport.cli`` is the ``headreport`` command and ``headreport.build`` the incremental build: the
thin layer above the two stages, ``headreport.analysis`` (tensors → JSON artifacts) and
``headreport.report`` (artifacts → site and PDF), which never import it. The API
(:mod:`headreport.api`) is loaded on first use, so the command line starts without it.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("headreport")
except PackageNotFoundError:  # a source tree that is not installed
    __version__ = "0+unknown"

__all__ = ["Report", "Survey", "__version__", "analyze", "load", "survey"]


def __getattr__(name: str):
    if name in ("analyze", "survey", "load", "Report", "Survey"):
        from . import api  # noqa: PLC0415 (the API's imports are not the command line's)

        return getattr(api, name)
    raise AttributeError(f"module 'headreport' has no attribute {name!r}")
