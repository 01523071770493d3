"""Packaging tests: the source tree's project files here, the installed wheel in test_wheel.

``test_wheel.py`` is about a wheel installed in a virtualenv of its own; scripts/test
builds that wheel, installs it and runs the file there with ``WORKQ_WHEEL_VENV`` set. In
the editable development install those checks would test the source tree instead, so
the file is not collected there at all.
"""

from __future__ import annotations

import os

collect_ignore = [] if os.environ.get("WORKQ_WHEEL_VENV") else ["test_wheel.py"]
