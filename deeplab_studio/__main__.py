"""`python -m deeplab_studio` runs the same entry point as `deeplab-studio`."""

import sys

from deeplab_studio.cli import main

sys.exit(main())
