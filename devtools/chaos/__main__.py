"""`python -m devtools.chaos [--quick] ...`"""

from devtools.chaos.cli import main

raise SystemExit(main())
