"""Run the `splitlog` command as `python -m splitlog_cli`."""

from splitlog_cli.main import main

raise SystemExit(main())
