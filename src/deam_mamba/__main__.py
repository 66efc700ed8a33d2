import sys

from deam_mamba.cli import main

sys.exit(main())
