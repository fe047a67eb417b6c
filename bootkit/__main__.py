"""Run the bootkit CLI with ``python -m bootkit``."""

from bootkit.cli import main

if __name__ == "__main__":
    main()
