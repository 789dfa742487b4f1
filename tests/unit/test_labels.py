"""Shipping labels: read the PDF back as text, and scan its barcodes off a 300-dpi rendering."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pypdfium2 as pdfium
import pytest
import zxingcpp
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image
from pydantic import ValidationError
from pypdf import PdfReader

from services.logistics.labels import PAGE_HEIGHT, PAGE_WIDTH, render_batch, render_label
from shared.api.labels import LabelData, LabelLine, LabelSender
from shared.events.dispatch import ShippingAddress

MM = 72 / 25.4
SCAN_DPI = 300


def a_label(**changes: object) -> LabelData:
    label = LabelData(
        carrier_code="ZTO",
        carrier_name="中通快递",
        waybill_no="78512345678901",
        parcel_no=1,
        parcel_count=2,
        sender=LabelSender(
            name="绿野仓配（义乌仓）",
            phone="0579-85551234",
            address="浙江省金华市义乌市稠城街道工人北路1088号",
        ),
        receiver=ShippingAddress(
            name="王小明",
            phone="13900001111-1234",
            province="浙江省",
            city="杭州市",
            county="西湖区",
            detail="文三路90号东部软件园3号楼5楼",
        ),
        order_id="3712345678901234567",
        dispatch_id="3712345678901234567-1",
        shop_name="绿野小铺",
        lines=[
            LabelLine(title="特级明前龙井 250g 礼盒装", sku_attrs="规格: 250g", quantity=2),
            LabelLine(title="青瓷盖碗", sku_attrs="容量: 150ml", quantity=1),
        ],
        printed_at=datetime(2025, 5, 20, 2, 30, tzinfo=UTC),
        sorting_code="杭州 310-02",
        e_waybill=True,
    )
    return label.model_copy(update=changes)


def page_texts(pdf: bytes) -> list[str]:
    return [page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages]


def page_images(pdf: bytes, dpi: int = SCAN_DPI) -> list[Image.Image]:
    document = pdfium.PdfDocument(pdf)
    try:
        return [document[i].render(scale=dpi / 72).to_pil() for i in range(len(document))]
    finally:
        document.close()


def code128_texts(image: Image.Image) -> set[str]:
    found = zxingcpp.read_barcodes(image, formats=zxingcpp.BarcodeFormats(zxingcpp.BarcodeFormat.Code128))
    return {barcode.text for barcode in found}


def test_one_page_of_100_by_150_mm() -> None:
    reader = PdfReader(io.BytesIO(render_label(a_label())))

    assert len(reader.pages) == 1
    box = reader.pages[0].mediabox
    assert float(box.width) == pytest.approx(100 * MM, abs=0.5)
    assert float(box.height) == pytest.approx(150 * MM, abs=0.5)
    assert (float(box.width), float(box.height)) == pytest.approx((PAGE_WIDTH, PAGE_HEIGHT))


def test_text_has_the_waybill_receiver_order_and_carrier() -> None:
    [text] = page_texts(render_label(a_label()))

    assert "78512345678901" in text
    assert "王小明" in text
    assert "13900001111-1234" in text  # a WeChat virtual number, extension included
    assert "3712345678901234567" in text
    assert "3712345678901234567-1" in text
    assert "中通快递" in text
    assert "杭州 310-02" in text
    assert "1/2" in text
    assert "微信电子面单" in text
    assert "打印 2025-05-20 10:30" in text  # Beijing time


def test_barcodes_scan_to_the_waybill_and_order_id() -> None:
    [image] = page_images(render_label(a_label()))

    assert code128_texts(image) == {"78512345678901", "3712345678901234567"}


def test_same_input_same_bytes() -> None:
    assert render_label(a_label()) == render_label(a_label())
    assert render_label(a_label()) != render_label(a_label(waybill_no="78512345678902"))


def test_optional_parts_can_be_left_out() -> None:
    label = a_label(sorting_code=None, e_waybill=False, lines=[])

    [text] = page_texts(render_label(label))
    [image] = page_images(render_label(label))

    assert "杭州 310-02" not in text
    assert "微信电子面单" not in text
    assert code128_texts(image) == {"78512345678901", "3712345678901234567"}


def test_batch_has_one_page_per_label_each_with_its_own_waybill() -> None:
    waybills = ["75000000000001", "SF1234567890123", "JDVA00012345678-1-1"]
    labels = [a_label(waybill_no=w, parcel_no=i + 1, parcel_count=3) for i, w in enumerate(waybills)]

    pdf = render_batch(labels)

    texts = page_texts(pdf)
    images = page_images(pdf)
    assert len(texts) == len(images) == 3
    for i, (waybill, text, image) in enumerate(zip(waybills, texts, images, strict=True)):
        assert waybill in text
        assert f"{i + 1}/3" in text
        assert code128_texts(image) == {waybill, "3712345678901234567"}


def test_an_empty_batch_is_refused() -> None:
    with pytest.raises(ValueError):
        render_batch([])


def test_long_line_lists_are_cut_to_one_page() -> None:
    lines = [
        LabelLine(
            title=f"第{i}款 超长商品标题" + "加厚保暖羊毛混纺" * 6,
            sku_attrs="颜色: 深灰; 尺码: XL",
            quantity=i,
        )
        for i in range(1, 41)
    ]

    pdf = render_label(a_label(lines=lines))

    [text] = page_texts(pdf)
    assert "…" in text  # titles too wide for the label end in an ellipsis
    shown = sum(1 for i in range(1, 41) if f"第{i}款" in text)
    assert 3 <= shown < 40
    assert f"+{40 - shown} more" in text
    assert "共 820 件" in text  # the total still counts every line
    [image] = page_images(pdf)
    assert code128_texts(image) == {"78512345678901", "3712345678901234567"}


def test_long_names_and_addresses_stay_on_the_page() -> None:
    receiver = ShippingAddress(
        name="欧阳" * 12,
        phone="13900001111-1234",
        province="新疆维吾尔自治区",
        city="伊犁哈萨克自治州",
        county="察布查尔锡伯自治县",
        detail="孙扎齐牛录镇" + "某某路某某小区某某号楼某某单元" * 8,
    )
    label = a_label(receiver=receiver, carrier_name="中国邮政速递物流（EMS 标准快递）", shop_name="店" * 80)

    pdf = render_label(label)

    [text] = page_texts(pdf)
    assert "…" in text
    assert "13900001111-1234" in text
    [image] = page_images(pdf)
    assert code128_texts(image) == {"78512345678901", "3712345678901234567"}


def test_parcel_number_is_within_the_count() -> None:
    with pytest.raises(ValidationError):
        LabelData.model_validate({**a_label().model_dump(), "parcel_no": 3, "parcel_count": 2})


def test_waybill_must_be_printable_ascii() -> None:
    with pytest.raises(ValidationError):
        LabelData.model_validate({**a_label().model_dump(), "waybill_no": "中通123"})


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(waybill=st.from_regex(r"^[A-Za-z0-9-]{6,30}$", fullmatch=True))
@example(waybill="aZ-" * 10)  # the widest symbol: 30 characters of code set B, the narrowest bars
@example(waybill="000000")
def test_any_waybill_number_scans_back(waybill: str) -> None:
    pdf = render_label(a_label(waybill_no=waybill))

    [image] = page_images(pdf)
    assert code128_texts(image) == {waybill, "3712345678901234567"}
