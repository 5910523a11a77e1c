import sys

from zhyper.cli import main

sys.exit(main())
