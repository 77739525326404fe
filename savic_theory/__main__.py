import sys

from savic_theory.cli import main

sys.exit(main())
