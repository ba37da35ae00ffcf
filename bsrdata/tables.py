"""The result tables of ``bsr bench`` and ``bsr eval`` (Markdown and CSV; standard library, plus
:mod:`bsrdata.metrics` for the convention texts).

Both commands write their tables through :func:`markdown_table` / :func:`csv_table`:

- the SR benchmark (:func:`bench_markdown`, :func:`bench_csv`): the paper's layout, one row per method,
  columns ``Group1..k`` and ``Avg``, each cell ``PSNR/SSIM`` (PSNR in dB with 2 decimals, SSIM with 4);
- the CMOS evaluation (:func:`eval_markdown`, :func:`eval_csv`): one row per group (and ``Avg``), columns
  blur-map PSNR/SSIM, mIoU (%) and/or PSNR-Y/SSIM-Y, whichever the rows carry, and the image count.

Results files record their scoring conventions (:mod:`bsrdata.metrics` ``eval_conventions`` /
``sr_conventions``): the Markdown tables end with a ``Conventions: ...`` line, the CSV tables carry them as
extra columns (``blur_norm``, ``miou_def``; ``sr_metric``, ``crop_border``), repeated on every row.

A row dict of the benchmark is ``{"label", "groups": {"1": {"psnr", "ssim", "n"}, ...}, "avg": {...}}``;
an evaluation result is ``{"1": {"blur_psnr", ..., "n"}, ..., "avg": {...}}`` (keys are strings).
"""

from __future__ import annotations

import csv
import io
import math

__all__ = ["markdown_table", "csv_table", "table_rows", "bench_markdown", "bench_csv", "eval_markdown",
           "eval_csv", "EVAL_COLUMNS"]


# ----------------------------------------------------------------------------------------- writers
def markdown_table(head, body, align=None, escape=True) -> str:
    """A pipe table: ``head`` (list of str), ``body`` (list of rows of str), ``align`` one of ``"---"`` /
    ``":---:"`` per column (default all ``"---"``). An empty cell is written as one space. Returns the lines
    joined by newlines, without a final newline."""
    def line(cells):
        cells = [c.replace("|", "\\|") if escape else c for c in cells]
        return "|" + "|".join(f" {c} " if c != "" else " " for c in cells) + "|"

    align = list(align) if align is not None else ["---"] * len(head)
    return "\n".join([line(head), "|" + "|".join(align) + "|"] + [line(cells) for cells in body])


def csv_table(head, body) -> str:
    """CSV text (``\\n`` line ends) of the ``head`` row and the ``body`` rows."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(head)
    for cells in body:
        w.writerow(cells)
    return buf.getvalue()


# ------------------------------------------------------------------------------------------- bench
def table_rows(rows, group_ids):
    """Header and body cells of the paper's layout: Method | Group1..k | Avg, each cell 'PSNR/SSIM'."""
    head = ["Method"] + [f"Group{g}" for g in group_ids] + ["Avg"]
    body = []
    for r in rows:
        cells = [r["label"]]
        for g in group_ids:
            v = r["groups"][str(g)]
            cells.append(f"{v['psnr']:.2f}/{v['ssim']:.4f}")
        cells.append(f"{r['avg']['psnr']:.2f}/{r['avg']['ssim']:.4f}")
        body.append(cells)
    return head, body


def bench_markdown(rows, group_ids, crop_border=0) -> str:
    """``bench.md``: the table and a line naming the conventions (Y channel, border crop; ends with a
    newline)."""
    from bsrdata.metrics import conventions_note, sr_conventions

    head, body = table_rows(rows, group_ids)
    table = markdown_table(head, body, align=["---"] + [":---:"] * (len(head) - 1))
    return table + "\n\n" + conventions_note(sr_conventions(crop_border)) + "\n"


def bench_csv(rows, group_ids, crop_border=None) -> str:
    """``bench.csv``: ``method, Group1_psnr, Group1_ssim, ..., Avg_psnr, Avg_ssim`` with 6 decimals, then
    (when ``crop_border`` is given) the convention columns ``sr_metric, crop_border``."""
    from bsrdata.metrics import convention_tags, sr_conventions

    tags = convention_tags(sr_conventions(crop_border)) if crop_border is not None else {}
    cols = [f"Group{g}" for g in group_ids] + ["Avg"]
    head = ["method"] + [f"{c}_{m}" for c in cols for m in ("psnr", "ssim")] + list(tags)
    body = []
    for r in rows:
        vals = [r["groups"][str(g)] for g in group_ids] + [r["avg"]]
        body.append([r["label"]] + [f"{v[m]:.6f}" for v in vals for m in ("psnr", "ssim")] + list(tags.values()))
    return csv_table(head, body)


# -------------------------------------------------------------------------------------------- eval
EVAL_COLUMNS = (("blur_psnr", "Blur PSNR", "{:.2f}"), ("blur_ssim", "Blur SSIM", "{:.4f}"),
                ("miou", "mIoU (%)", "{:.2f}"), ("psnr", "PSNR-Y", "{:.2f}"), ("ssim", "SSIM-Y", "{:.4f}"))


def _eval_label(g):
    return "Avg" if g == "avg" else (f"Group{g}" if str(g).isdigit() else str(g))


def _eval_cols(rows):
    return [c for c in EVAL_COLUMNS if any(c[0] in r for r in rows.values())]


def eval_markdown(rows: dict, conventions: dict | None = None) -> str:
    """The evaluation table (rows = groups and Avg; a missing or NaN value is "–"), then, with
    ``conventions`` (:func:`bsrdata.metrics.eval_conventions`), a blank line and their one-line note; no
    final newline."""
    from bsrdata.metrics import conventions_note

    cols = _eval_cols(rows)
    head = [""] + [c[1] for c in cols] + ["images"]
    body = []
    for g, r in rows.items():
        vals = [("–" if c[0] not in r or math.isnan(r[c[0]]) else c[2].format(r[c[0]])) for c in cols]
        body.append([_eval_label(g)] + vals + [str(r.get("n", ""))])
    table = markdown_table(head, body)
    note = conventions_note(conventions) if conventions else ""
    return table + ("\n\n" + note if note else "")


def eval_csv(rows: dict, conventions: dict | None = None) -> str:
    """The evaluation table as CSV: ``group, <metric keys>, n`` with 6 decimals, then the convention
    columns of ``conventions`` (``blur_norm``, ``miou_def``) when given."""
    from bsrdata.metrics import convention_tags

    tags = convention_tags(conventions) if conventions else {}
    cols = _eval_cols(rows)
    head = ["group"] + [c[0] for c in cols] + ["n"] + list(tags)
    body = [[_eval_label(g)] + [("" if c[0] not in r else f"{r[c[0]]:.6f}") for c in cols] + [r.get("n", "")]
            + list(tags.values()) for g, r in rows.items()]
    return csv_table(head, body)
