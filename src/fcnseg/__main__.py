"""``python -m fcnseg``: the ``fcnseg`` command, also as ``torchrun --nproc-per-node N -m fcnseg train ...``."""

import sys

from fcnseg.cli.main import main

sys.exit(main())
