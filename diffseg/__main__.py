"""`python -m diffseg ...` is the same as the `diffseg` command."""

from diffseg.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
