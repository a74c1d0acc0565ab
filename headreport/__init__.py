"""The command line and the build orchestration: the thin layer above both stages.

``analysis/`` (tensors → JSON artifacts) and ``report/`` (artifacts → site and PDF) never import
this package; it may call both. ``headreport.cli`` is the ``headreport`` command; ``headreport.build``
analyses only when an input changed and then renders.
"""
