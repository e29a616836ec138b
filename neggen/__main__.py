import sys

from neggen.cli import main

sys.exit(main())
