"""workq.testing: the pytest plugin, broker launchers and the conformance suite."""
