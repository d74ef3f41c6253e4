"""README's generated blocks and DVC's offline plot template (run by hand after `dvc repro`).

    python -m lmask.readme                     # README blocks <- metrics/summary.md, metrics/benchmark.md,
                                               #   results/long/summary.md (the long preset's committed run)
python -m lmask.readme --dvc-template DIR  # rebuild .dvc/plots/offline.html from unpacked npm packages
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from lmask.io import write_text

README_START, README_END = "<!-- results:start -->", "<!-- results:end -->"
BENCH_START, BENCH_END = "<!-- benchmark:start -->", "<!-- benchmark:end -->"
LONG_START, LONG_END = "<!-- long-run:start -->", "<!-- long-run:end -->"


def replace_block(readme: str, block: str, start_marker: str = README_START, end_marker: str = README_END) -> str:
    """README text with the block between two markers replaced by ``block``."""
    start, end = readme.find(start_marker), readme.find(end_marker)
    if start < 0 or end < start:
        raise ValueError(f"README.md lacks the markers {start_marker} ... {end_marker}")
    return readme[: start + len(start_marker)] + "\n" + block + readme[end:]


def update_readme(
    readme_path: Path = Path("README.md"),
    summary_path: Path = Path("metrics/summary.md"),
    benchmark_path: Path = Path("metrics/benchmark.md"),
    long_run_path: Path = Path("results/long/summary.md"),
) -> None:
    """Refresh README's generated blocks from the pipeline's markdown outputs."""
    readme = replace_block(readme_path.read_text(), summary_path.read_text())
    readme = replace_block(readme, benchmark_path.read_text(), BENCH_START, BENCH_END)
    if long_run_path.exists():
        readme = replace_block(readme, long_run_path.read_text(), LONG_START, LONG_END)
    write_text(readme_path, readme)


def offline_dvc_template(npm_dir: Path) -> str:
    """An HTML template for `dvc plots show/diff` with vega, vega-lite and vega-embed inlined (no CDN).

    ``npm_dir`` holds the unpacked packages (npm pack vega@5 vega-lite@5 vega-embed@6; tar xzf each into
    vega/, vega-lite/, vega-embed/). DVC replaces {plot_divs}; {scripts} is left out on purpose (its CDN tags).
    """
    scripts = []
    for pkg in ("vega", "vega-lite", "vega-embed"):
        src = (npm_dir / pkg / "build" / f"{pkg}.min.js").read_text(encoding="utf-8")
        src = "\n".join(line for line in src.splitlines() if not line.startswith("//# sourceMappingURL"))
        version = json.loads((npm_dir / pkg / "package.json").read_text())["version"]
        if "</script" in src.lower() or "{plot_divs}" in src:
            raise ValueError(f"{pkg}: cannot inline safely")
        scripts.append(f"<!-- {pkg}@{version} (BSD-3-Clause) -->\n<script>{src}</script>")
    return (
        '<!DOCTYPE html>\n<html>\n<head>\n<meta charset="utf-8">\n{refresh_tag}\n<title>DVC Plot</title>\n'
        + "\n".join(scripts)
        + "\n<style>table { border-spacing: 15px; }</style>\n</head>\n<body>\n{plot_divs}\n</body>\n</html>\n"
    )


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--dvc-template":
        out = Path(".dvc/plots/offline.html")
        write_text(out, offline_dvc_template(Path(sys.argv[2])))
        print(f"wrote {out}; enable with: dvc config plots.html_template plots/offline.html")
    elif len(sys.argv) == 1:
        update_readme()
        print("README.md: blocks from metrics/summary.md, metrics/benchmark.md and results/long/summary.md")
    else:
        raise SystemExit("usage: python -m lmask.readme [--dvc-template NPM_DIR]")
