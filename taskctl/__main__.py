"""python -m taskctl"""

import sys

from taskctl.cli import main

sys.exit(main())
