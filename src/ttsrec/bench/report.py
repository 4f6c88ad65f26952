"""Results out, one module per format, each over a typed `SweepResult` (or its rows):

- `bench.tables`: the tables a person reads (the live rows, the derived figures; the CLI draws them);
- `bench.rows_csv`: perf_analyzer's `-f` CSV of every row;
- `bench.markdown`: the rows and derived figures as markdown tables;
- `bench.plot`: the PNG of throughput and p99 against M;
- the JSON report is `SweepResult.to_json` written by `ttsrec.utils.atomic.write_json`, the frontier PNG
  `bench.frontier.plot_frontier`; `bench.outputs` writes the files a run asks for.

This module keeps the names these had here.
"""

from __future__ import annotations

from ttsrec.bench.cells import beaten
from ttsrec.bench.markdown import FLOOR_HEADER, ROOF_HEADER, markdown, roofline_markdown
from ttsrec.bench.plot import plot
from ttsrec.bench.rows_csv import read_csv, write_csv
from ttsrec.bench.tables import CAPTION, roofline_table, summary_tables, table

__all__ = ["CAPTION", "FLOOR_HEADER", "ROOF_HEADER", "beaten", "markdown", "plot", "read_csv",
           "roofline_markdown", "roofline_table", "summary_tables", "table", "write_csv"]
