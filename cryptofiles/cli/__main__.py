"""``python -m cryptofiles.cli``: the ``cryptofiles`` command without the installed script."""

import sys

from cryptofiles.cli.main import main

sys.exit(main())
