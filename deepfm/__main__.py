"""``python -m deepfm`` is the ``deepfm`` command."""

import sys

from deepfm.cli import main

sys.exit(main())
