"""Middleware that ships with workq for other systems (extras: ``otel``, ``prometheus``)."""
