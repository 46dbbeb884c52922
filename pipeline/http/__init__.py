"""The service's HTTP edge: uvicorn (h11) serving small ASGI apps, one set of limits and errors.

- :mod:`pipeline.http.protocol`: the HTTP/1.1 connection (uvicorn's h11 protocol with JSON
  answers to framing errors and a deadline for the request head);
- :mod:`pipeline.http.app`: request reading (body limit and timeout), routing errors, JSON replies;
- :mod:`pipeline.http.servers`: the listening sockets and the event-loop thread that serves them.

The apps themselves are :mod:`pipeline.gateway` (Paddle Serving's ``/<service>/<method>`` JSON),
:mod:`pipeline.kserve.server` (KServe v2) and :mod:`pipeline.metrics` (``/metrics``).
"""
