#!/usr/bin/env bash
# Regenerate the pictures under docs/: two figures of the demo (shown in docs/figures.md,
# the first also in README.md) and the rule graph.
#   bash scripts/docs.sh        # after scripts/setup.sh; runs the demo first where it has not run
# Needs Graphviz's `dot` for the rule graph (installed here from Debian when run as root). With
# Debian's `chromium` installed (apt-get install chromium) it also screenshots the report to
# results/report-*.png, a check by eye that the report opens and shows its figures.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
CORES="${CORES:-2}"

if ! command -v dot > /dev/null; then
    if [ "$(id -u)" = 0 ]; then
        apt-get install -y --no-install-recommends graphviz
    else
        echo "scripts/docs.sh: the rule graph needs Graphviz: sudo apt-get install graphviz" >&2
        exit 1
    fi
fi

snakemake --cores "$CORES" demo
snakemake --report results/report.html demo
cp results/plots/demo_unlabelled/clips.png docs/clips.png
cp results/plots/finetune/demo_labelled/demo_unlabelled/full.png docs/finetune.png
snakemake demo --rulegraph 2> /dev/null | dot -Tsvg > docs/rulegraph.svg

if command -v chromium > /dev/null; then
    # The report is one page app: open it, then show one category and one figure through its own
    # `app` object (the links inside the report do the same).
    profile="$(mktemp -d)"
    python - << 'EOF'
import pathlib
page = pathlib.Path("results/report.html").read_text()
show = """<script>setTimeout(() => { app.showCategory('3. Training'); setTimeout(() => {
  const path = Object.keys(results).find(p => p.includes('plots/finetune/'));
  app.setView({content: 'img', contentPath: results[path].data_uri, resultPath: path}); }, 500); }, 500);</script>"""
end = page.rindex("</body>")
pathlib.Path("results/report-figure.html").write_text(page[:end] + show + page[end:])
EOF
    for page in report report-figure; do
        chromium --headless --no-sandbox --disable-gpu --disable-background-networking --disable-component-update \
            --no-first-run --user-data-dir="$profile" --window-size=1400,1000 --virtual-time-budget=10000 \
            --screenshot="results/$page.png" "file://$PWD/results/$page.html" 2> /dev/null
    done
    rm -rf "$profile"
    echo "scripts/docs.sh: look at results/report.png and results/report-figure.png"
fi
