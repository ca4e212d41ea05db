"""``medsam-lite serve``: an interactive box-prompted annotator in the browser (FastAPI + a static page).

:func:`medsam_lite.serve.app.create_app` builds the app; :class:`medsam_lite.serve.config.ServeConfig`
holds its settings. The HTTP API is documented in :mod:`medsam_lite.serve.app` and docs/serve.md.
"""
