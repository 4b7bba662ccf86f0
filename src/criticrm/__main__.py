"""`python -m criticrm` is the `criticrm` command."""

import sys

from criticrm.cli import main

sys.exit(main())
