"""``python -m novamesh`` is the ``novamesh`` command."""

from novamesh.cli.main import main

if __name__ == "__main__":
    main()
