"""Under CI (``CI`` set), hypothesis draws the same examples on every run, so a submission's
result does not depend on which random examples it drew; locally it keeps exploring."""

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
