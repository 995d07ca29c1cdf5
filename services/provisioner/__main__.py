"""`python -m services.provisioner`: run the provisioner service until SIGTERM."""

import sys

from services.provisioner.bootstrap import bootstrap
from services.provisioner.settings import ProvisionerSettings
from shared.lifecycle import service_main
from shared.settings import load_settings


def main() -> int:
    """Entry point: settings from QUICFLEET_* variables, then serve."""
    return service_main("provisioner", lambda: load_settings(ProvisionerSettings), bootstrap)


if __name__ == "__main__":
    sys.exit(main())
