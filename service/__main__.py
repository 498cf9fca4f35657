"""``python -m service`` and ``digits-serve``: serve the app with the ``DIGITS_*`` settings (``service.supervisor``)."""

from __future__ import annotations

from service.supervisor import serve


def main() -> None:
    serve("service.main:create_app")


if __name__ == "__main__":
    main()
