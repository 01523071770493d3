"""Packaging tests: the project's files (``test_project``) and the installed wheel.

``test_wheel.py`` is about a wheel installed in a virtualenv of its own: scripts/test
builds that wheel, installs it and runs the file there with ``WORKQ_WHEEL_VENV`` set.
In the editable development install those checks would test the source tree instead,
so the file is not collected there; ``test_project.py`` reads the source tree, so it is
not collected in the wheel's virtualenv.
"""

from __future__ import annotations

import os

IN_WHEEL_VENV = bool(os.environ.get("WORKQ_WHEEL_VENV"))
collect_ignore = ["test_project.py"] if IN_WHEEL_VENV else ["test_wheel.py"]
