"""``python -m analysis`` runs ``gmm-report`` (see :mod:`analysis.report`)."""

import sys

from analysis.report import main

sys.exit(main())
