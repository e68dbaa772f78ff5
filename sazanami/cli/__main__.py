"""``python -m sazanami.cli``: the ``sazanami`` command."""

from sazanami.cli import main

main()
