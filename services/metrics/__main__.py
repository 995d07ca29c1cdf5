"""`python -m services.metrics`: run the metrics service until SIGTERM."""

import sys

from services.metrics.bootstrap import bootstrap
from services.metrics.settings import MetricsSettings
from shared.lifecycle import service_main
from shared.settings import load_settings


def main() -> int:
    """Entry point: settings from QUICFLEET_* variables, then serve."""
    return service_main("metrics", lambda: load_settings(MetricsSettings), bootstrap)


if __name__ == "__main__":
    sys.exit(main())
