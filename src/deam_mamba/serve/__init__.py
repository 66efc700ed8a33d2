"""serve: ``deam-mamba serve`` -- a local web page and a JSON API over one trained run (FastAPI + uvicorn).

:mod:`deam_mamba.serve.app` builds the application around an
:class:`~deam_mamba.inference.predictor.Predictor`; :mod:`deam_mamba.serve.server` binds the socket, loads
the run once and runs uvicorn. ``page.html`` is the whole web page (inline CSS/JS, nothing from the network).
"""
