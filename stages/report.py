"""Stage report: plots/report.html (self-contained interactive page) and metrics/summary.md (README's table)."""

from lmask.params import load_params
from lmask.report import write_report


def main() -> None:
    write_report(load_params())
    print("wrote plots/report.html and metrics/summary.md")


if __name__ == "__main__":
    main()
