"""Shipping labels (面单): one 100 mm × 150 mm PDF page per parcel, for thermal label printers.

Pure: `LabelData` in, PDF bytes out, the same bytes for the same input. Top to bottom the page has
the carrier and parcel count, the sorting code (大头笔) printed big, the waybill's Code 128 with its
number under it, the receiver (large), the sender, the order and dispatch ids with a smaller Code 128
of the order id, the parcel's lines (cut to fit, "+N more"), and the shop and print time.

Chinese text uses Adobe's CID font STSong-Light, which every PDF reader knows and which needs no font
file; the PDF names it without embedding it, so the printing machine supplies the glyphs.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta, timezone
from functools import cache
from typing import Literal

from reportlab.graphics.barcode.code128 import Code128
from reportlab.lib.units import inch, mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.cidfonts import UnicodeCIDFont
from reportlab.pdfgen.canvas import Canvas

from shared.api.labels import LabelData

PAGE_WIDTH = 100 * mm
PAGE_HEIGHT = 150 * mm

CJK_FONT = "STSong-Light"
LATIN_FONT = "Helvetica"
LATIN_BOLD_FONT = "Helvetica-Bold"

# China has one time zone and no daylight saving: print times are Beijing time without a tz database.
CHINA_TIME = timezone(timedelta(hours=8), "CST")

# One dot of a 203-dpi print head, the common thermal label resolution. Bar widths are whole dots so
# every bar prints at the width the symbology asks for.
PRINTER_DOT = inch / 203
QUIET_ZONE_MODULES = 10  # Code 128 needs 10 modules of white on each side

_INSET = 2 * mm  # the frame, inside the printer's unprintable edge
_PAD = 2 * mm  # text inside the frame
_LEFT = _INSET + _PAD
_RIGHT = PAGE_WIDTH - _INSET - _PAD
_TEXT_WIDTH = _RIGHT - _LEFT

_ELLIPSIS = "…"
Anchor = Literal["left", "centre", "right"]


@dataclass(frozen=True)
class _Style:
    font: str
    size: float
    bold: bool = False  # STSong-Light has no bold face: bold is the glyphs filled and stroked
    white: bool = False  # on a black badge


@cache
def _register_fonts() -> None:
    pdfmetrics.registerFont(UnicodeCIDFont(CJK_FONT))


def render_label(data: LabelData) -> bytes:
    """One label, one page."""
    return render_batch([data])


def render_batch(labels: Sequence[LabelData]) -> bytes:
    """One PDF, one page per label in the given order: a pickup batch printed in one job."""
    if not labels:
        raise ValueError("a label batch needs at least one label")
    _register_fonts()
    out = io.BytesIO()
    # invariant=1: fixed creation date and document id, so the same labels give the same bytes.
    canvas = Canvas(out, pagesize=(PAGE_WIDTH, PAGE_HEIGHT), invariant=1, pageCompression=1)
    first = labels[0]
    canvas.setTitle(
        f"{first.carrier_name} {first.waybill_no}" + (f" +{len(labels) - 1}" if len(labels) > 1 else "")
    )
    canvas.setCreator("Lüyue logistics")
    for label in labels:
        _draw_label(canvas, label)
        canvas.showPage()
    canvas.save()
    return out.getvalue()


# --- layout -------------------------------------------------------------------------------------------


def _draw_label(canvas: Canvas, data: LabelData) -> None:
    canvas.setLineWidth(0.8)
    canvas.rect(_INSET, _INSET, PAGE_WIDTH - 2 * _INSET, PAGE_HEIGHT - 2 * _INSET)
    top = PAGE_HEIGHT - _INSET
    top = _separated(canvas, _draw_header(canvas, data, top))
    if data.sorting_code:
        top = _separated(canvas, _draw_sorting_code(canvas, data.sorting_code, top))
    top = _separated(canvas, _draw_waybill(canvas, data, top))
    top = _separated(canvas, _draw_receiver(canvas, data, top))
    top = _separated(canvas, _draw_sender(canvas, data, top))
    top = _separated(canvas, _draw_order(canvas, data, top))
    footer_top = _INSET + 6 * mm
    _draw_lines(canvas, data, top, footer_top)
    _separated(canvas, footer_top)
    _draw_footer(canvas, data, footer_top)


def _separated(canvas: Canvas, y: float) -> float:
    canvas.setLineWidth(0.6)
    canvas.line(_INSET, y, PAGE_WIDTH - _INSET, y)
    return y


def _draw_header(canvas: Canvas, data: LabelData, top: float) -> float:
    height = 13 * mm
    baseline = top - 8.5 * mm
    # Right: parcel n/m in a box, and the e-waybill tag left of it.
    count = f"{data.parcel_no}/{data.parcel_count}"
    count_style = _Style(LATIN_BOLD_FONT, 14)
    box_w = max(14 * mm, _width(count, count_style) + 4 * mm)
    box_x = _RIGHT - box_w
    canvas.setLineWidth(1.2)
    canvas.rect(box_x, top - 11 * mm, box_w, 9 * mm)
    _text(canvas, box_x + box_w / 2, top - 8.6 * mm, count, count_style, anchor="centre")
    right_edge = box_x - 2 * mm
    if data.e_waybill:
        tag_style = _Style(CJK_FONT, 8, bold=True, white=True)
        tag = "微信电子面单"
        tag_w = _width(tag, tag_style) + 3 * mm
        tag_x = right_edge - tag_w
        canvas.roundRect(tag_x, top - 9.8 * mm, tag_w, 6.5 * mm, 1 * mm, stroke=0, fill=1)
        _text(canvas, tag_x + tag_w / 2, top - 7.5 * mm, tag, tag_style, anchor="centre")
        right_edge = tag_x - 2 * mm
    # Left: carrier name, shrunk to the room left.
    room = right_edge - _LEFT
    name_style = _fitted_style(data.carrier_name, CJK_FONT, 18, 10, room, bold=True)
    _text(canvas, _LEFT, baseline, _cut(data.carrier_name, name_style, room), name_style)
    _text(canvas, _LEFT, top - 11.5 * mm, data.carrier_code, _Style(LATIN_FONT, 6.5))
    return top - height


def _draw_sorting_code(canvas: Canvas, sorting_code: str, top: float) -> float:
    height = 16 * mm
    style = _fitted_style(sorting_code, CJK_FONT, 34, 14, _TEXT_WIDTH, bold=True)
    text = _cut(sorting_code, style, _TEXT_WIDTH)
    # Centre the glyphs' body (about 0.8 of the size above the baseline) in the band.
    _text(canvas, PAGE_WIDTH / 2, top - height / 2 - 0.36 * style.size, text, style, anchor="centre")
    return top - height


def _draw_waybill(canvas: Canvas, data: LabelData, top: float) -> float:
    height = 25 * mm
    bar_height = 15 * mm
    bars_top = top - 2.5 * mm
    _barcode(
        canvas,
        data.waybill_no,
        centre_x=PAGE_WIDTH / 2,
        y=bars_top - bar_height,
        bar_height=bar_height,
        max_width=PAGE_WIDTH - 2 * _INSET - 2 * mm,
        preferred_dots=4,
    )
    style = _fitted_style(data.waybill_no, LATIN_BOLD_FONT, 13, 6, _TEXT_WIDTH)
    _text(canvas, PAGE_WIDTH / 2, bars_top - bar_height - 5 * mm, data.waybill_no, style, anchor="centre")
    return top - height


def _badge(canvas: Canvas, x: float, top: float, side: float, char: str, size: float) -> None:
    canvas.rect(x, top - side, side, side, stroke=0, fill=1)
    style = _Style(CJK_FONT, size, bold=True, white=True)
    _text(canvas, x + side / 2, top - side / 2 - 0.36 * size, char, style, anchor="centre")


def _draw_receiver(canvas: Canvas, data: LabelData, top: float) -> float:
    height = 29 * mm
    side = 10 * mm
    _badge(canvas, _LEFT, top - 2 * mm, side, "收", 20)
    x = _LEFT + side + 2.5 * mm
    room = _RIGHT - x
    receiver = data.receiver
    phone_style = _Style(LATIN_BOLD_FONT, 13)
    phone_w = _width(receiver.phone, phone_style)
    name_style = _Style(CJK_FONT, 15, bold=True)
    name = _cut(receiver.name, name_style, max(room - phone_w - 3 * mm, room / 3))
    baseline = top - 7.5 * mm
    name_w = _text(canvas, x, baseline, name, name_style)
    phone_x = x + name_w + 3 * mm
    _text(canvas, phone_x, baseline, _cut(receiver.phone, phone_style, _RIGHT - phone_x), phone_style)
    parts = [receiver.province, receiver.city, receiver.county, receiver.detail]
    if receiver.city == receiver.province:  # 北京市 北京市: municipalities repeat themselves
        parts.pop(1)
    address = " ".join(p.strip() for p in parts if p.strip())
    _paragraph(canvas, x, top - 13.5 * mm, address, room, sizes=(13, 12, 11, 10, 9), max_lines=3, bold=True)
    return top - height


def _draw_sender(canvas: Canvas, data: LabelData, top: float) -> float:
    height = 15 * mm
    side = 7 * mm
    _badge(canvas, _LEFT, top - 2 * mm, side, "寄", 13)
    x = _LEFT + side + 2.5 * mm
    room = _RIGHT - x
    sender = data.sender
    phone_style = _Style(LATIN_FONT, 9)
    phone_w = _width(sender.phone, phone_style)
    name_style = _Style(CJK_FONT, 9.5, bold=True)
    name = _cut(sender.name, name_style, max(room - phone_w - 3 * mm, room / 3))
    baseline = top - 5.5 * mm
    name_w = _text(canvas, x, baseline, name, name_style)
    phone_x = x + name_w + 3 * mm
    _text(canvas, phone_x, baseline, _cut(sender.phone, phone_style, _RIGHT - phone_x), phone_style)
    _paragraph(canvas, x, top - 9.5 * mm, sender.address, room, sizes=(8.5, 8, 7.5, 7), max_lines=2)
    return top - height


def _draw_order(canvas: Canvas, data: LabelData, top: float) -> float:
    height = 16 * mm
    bar_height = 9 * mm
    barcode_left = _barcode(
        canvas,
        data.order_id,
        right_x=PAGE_WIDTH - _INSET - 1 * mm,
        y=top - 3 * mm - bar_height,
        bar_height=bar_height,
        max_width=45 * mm,
        preferred_dots=2,
    )
    room = barcode_left - _LEFT
    label = _Style(CJK_FONT, 7)
    _text(canvas, _LEFT, top - 4.5 * mm, "订单号", label)
    id_style = _fitted_style(data.order_id, LATIN_BOLD_FONT, 11, 7, room)
    _text(canvas, _LEFT, top - 8.8 * mm, data.order_id, id_style)
    _text(canvas, _LEFT, top - 13.3 * mm, "发货单", label)
    dispatch_x = _LEFT + _width("发货单", label) + 1.5 * mm
    dispatch_style = _Style(_font_for(data.dispatch_id, bold=False), 8)
    _text(
        canvas,
        dispatch_x,
        top - 13.3 * mm,
        _cut(data.dispatch_id, dispatch_style, _RIGHT - dispatch_x),
        dispatch_style,
    )
    return top - height


def _draw_lines(canvas: Canvas, data: LabelData, top: float, bottom: float) -> None:
    header_style = _Style(CJK_FONT, 8, bold=True)
    total = sum(line.quantity for line in data.lines)
    _text(canvas, _LEFT, top - 4 * mm, f"商品明细  共 {total} 件", header_style)
    style = _Style(CJK_FONT, 8)
    step = 3.9 * mm
    first_baseline = top - 8.2 * mm
    rows = max(0, int((first_baseline - (bottom + 1.2 * mm)) // step) + 1)
    lines = data.lines
    shown = lines if len(lines) <= rows else lines[: max(rows - 1, 0)]
    baseline = first_baseline
    for line in shown:
        qty = f"×{line.quantity}"
        qty_w = _text(canvas, _RIGHT, baseline, qty, _Style(LATIN_BOLD_FONT, 8.5), anchor="right")
        text = f"{line.title}  {line.sku_attrs}".strip()
        _text(canvas, _LEFT, baseline, _cut(text, style, _TEXT_WIDTH - qty_w - 3 * mm), style)
        baseline -= step
    if len(shown) < len(lines):
        _text(canvas, _LEFT, baseline, f"+{len(lines) - len(shown)} more", _Style(LATIN_BOLD_FONT, 8))


def _draw_footer(canvas: Canvas, data: LabelData, top: float) -> None:
    baseline = top - 4.2 * mm
    style = _Style(CJK_FONT, 7)
    printed = data.printed_at.astimezone(CHINA_TIME).strftime("%Y-%m-%d %H:%M")
    time_w = _text(canvas, _RIGHT, baseline, f"打印 {printed}", style, anchor="right")
    _text(canvas, _LEFT, baseline, _cut(data.shop_name, style, _TEXT_WIDTH - time_w - 3 * mm), style)


# --- drawing primitives ---------------------------------------------------------------------------------


def _barcode(
    canvas: Canvas,
    value: str,
    *,
    y: float,
    bar_height: float,
    max_width: float,
    preferred_dots: int,
    centre_x: float | None = None,
    right_x: float | None = None,
) -> float:
    """Draw a Code 128 of `value` with its quiet zones inside `max_width`; return its left edge (quiet
    zone included). Bars are whole printer dots wide, down to 2 dots; a value too long for that is scaled
    to fit, which 300-dpi printers and scanners still read."""
    modules = float(Code128(value, barWidth=1, quiet=0).width) + 2 * QUIET_ZONE_MODULES
    module = max_width / modules
    for dots in range(preferred_dots, 1, -1):
        if modules * dots * PRINTER_DOT <= max_width:
            module = dots * PRINTER_DOT
            break
    symbol = Code128(value, barWidth=module, barHeight=bar_height, quiet=0)
    total = modules * module
    if centre_x is not None:
        left = centre_x - total / 2
    elif right_x is not None:
        left = right_x - total
    else:
        raise ValueError("place the barcode by centre_x or right_x")
    symbol.drawOn(canvas, left + QUIET_ZONE_MODULES * module, y)
    return left


def _font_for(text: str, *, bold: bool) -> str:
    if text.isascii():
        return LATIN_BOLD_FONT if bold else LATIN_FONT
    return CJK_FONT


def _runs(text: str, style: _Style) -> list[tuple[str, _Style]]:
    """Split text set in the CJK font into runs: Latin-1 characters (digits, "Lüyue", "150ml") in
    Helvetica, whose metrics every reader shares; the CID font gives them full-width or odd spacing."""
    if style.font != CJK_FONT:
        return [(text, style)]
    latin = _Style(LATIN_BOLD_FONT if style.bold else LATIN_FONT, style.size, white=style.white)
    runs: list[tuple[str, _Style]] = []
    for char in text:
        char_style = latin if ord(char) < 0x100 else style
        if runs and runs[-1][1] is char_style:
            runs[-1] = (runs[-1][0] + char, char_style)
        else:
            runs.append((char, char_style))
    return runs


def _width(text: str, style: _Style) -> float:
    return sum(pdfmetrics.stringWidth(run, s.font, s.size) for run, s in _runs(text, style))


def _text(canvas: Canvas, x: float, y: float, text: str, style: _Style, anchor: Anchor = "left") -> float:
    """Draw one line of text at baseline `y`, anchored at `x`; return its width."""
    width = _width(text, style)
    if anchor == "centre":
        x -= width / 2
    elif anchor == "right":
        x -= width
    canvas.saveState()  # render mode, line width and colour are graphics state: keep them to this text
    if style.white:
        canvas.setFillGray(1)
        canvas.setStrokeGray(1)
    canvas.setLineWidth(style.size * 0.04)
    obj = canvas.beginText(x, y)
    for run, run_style in _runs(text, style):
        obj.setFont(run_style.font, run_style.size)
        # Fill, then stroke the outline: a faux bold for the CJK font, which has no bold face.
        obj.setTextRenderMode(2 if run_style.bold and run_style.font == CJK_FONT else 0)
        obj.textOut(run)
    obj.setTextRenderMode(0)
    canvas.drawText(obj)
    canvas.restoreState()
    return width


def _fitted_style(
    text: str, font: str, largest: float, smallest: float, width: float, *, bold: bool = False
) -> _Style:
    """The largest size, in half points, at which `text` fits in `width`; `smallest` if none does."""
    size = largest
    while size > smallest and _width(text, _Style(font, size, bold)) > width:
        size -= 0.5
    return _Style(font, size, bold)


def _cut(text: str, style: _Style, width: float) -> str:
    """`text`, or as much of it as fits in `width` followed by an ellipsis."""
    if _width(text, style) <= width:
        return text
    keep = len(text)
    while keep > 0 and _width(text[:keep].rstrip() + _ELLIPSIS, style) > width:
        keep -= 1
    return text[:keep].rstrip() + _ELLIPSIS


def _wrap(text: str, style: _Style, width: float) -> list[str]:
    """Greedy wrap by character: Chinese addresses have no spaces to break at."""
    lines: list[str] = []
    current = ""
    for char in text:
        if current and _width(current + char, style) > width:
            lines.append(current.rstrip())
            current = "" if char == " " else char
        else:
            current += char
    if current.strip():
        lines.append(current.rstrip())
    return lines


def _paragraph(
    canvas: Canvas,
    x: float,
    first_baseline: float,
    text: str,
    width: float,
    *,
    sizes: Sequence[float],
    max_lines: int,
    bold: bool = False,
) -> None:
    """Wrap `text` at the largest of `sizes` that fits in `max_lines`; at the smallest, cut the last line."""
    for size in sizes:
        style = _Style(CJK_FONT, size, bold)
        lines = _wrap(text, style, width)
        if len(lines) <= max_lines:
            break
    else:
        rest = "".join(lines[max_lines - 1 :])
        lines = [*lines[: max_lines - 1], _cut(rest + _ELLIPSIS, style, width)]
    leading = style.size * 1.25
    for i, line in enumerate(lines):
        _text(canvas, x, first_baseline - i * leading, line, style)
