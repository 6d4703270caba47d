import sys

from taskweb.cli import main

sys.exit(main())
