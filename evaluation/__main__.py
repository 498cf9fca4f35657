"""``python -m evaluation`` and ``digits-evaluate``: the comparison report (:mod:`evaluation.run`)."""

from evaluation.run import main

__all__ = ["main"]

if __name__ == "__main__":
    raise SystemExit(main())
