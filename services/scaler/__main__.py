"""`python -m services.scaler`: run the scaler service until SIGTERM."""

import sys

from services.scaler.bootstrap import bootstrap
from services.scaler.settings import ScalerSettings
from shared.lifecycle import service_main
from shared.settings import load_settings


def main() -> int:
    """Entry point: settings from QUICFLEET_* variables, then serve."""
    return service_main("scaler", lambda: load_settings(ScalerSettings), bootstrap)


if __name__ == "__main__":
    sys.exit(main())
