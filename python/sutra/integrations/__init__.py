"""Bridges from sutra to other frameworks, each behind an extra of its own.

Nothing here is imported by ``import sutra``, and importing a submodule does not import the
framework it bridges to: that happens when it is first used, which raises ``ImportError``
naming the extra to install when the framework is missing.

- :mod:`sutra.integrations.ray`: embed a Ray Data dataset on a Ray cluster
  (``pip install "sutra[ray]"``).
"""
