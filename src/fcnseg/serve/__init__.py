"""``fcnseg serve``: a model as an HTTP service, built on FastAPI and uvicorn (docs/serve.md).

:mod:`.app` holds the routes (``/predict``, ``/health``, ``/info``, the page at ``/``), the API key and the error
format; :mod:`.v2` the Open Inference Protocol v2 routes; :mod:`.service` the model behind them (warm-up, readiness,
decoding, batching); :mod:`.batching` the queue that runs concurrent requests of one image size as one forward pass;
:mod:`.uploads` request bodies to images, within the limits of :mod:`.config`; :mod:`.results` masks to PNG and JSON;
``static/`` the browser page. Nothing here is imported by ``import fcnseg`` or by the other commands, so FastAPI is
needed only to serve (``pip install 'fcnseg[serve]'``).
"""
