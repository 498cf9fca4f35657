"""``python -m training`` and the ``digits-train`` console script."""

from training.train import main

__all__ = ["main"]

if __name__ == "__main__":
    raise SystemExit(main())
