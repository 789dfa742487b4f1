"""A short live-stream sale on the whole line (every service and stand-in, the supplier bots, the
shop's desk): a few hundred orders in compressed time, every after-sale type, and the invariants
held against the stand-ins' records as the assertion."""

from __future__ import annotations

import pytest

from ops.sale import CatalogRegistrar
from ops.stack import LocalStack
from shared.operators import OperatorTokens
from shared.wechat.shops import ShopRepository
from sim.sale import SaleSettings, SaleUrls, run_sale
from sim.sale.settings import (
    BuyerDelays,
    CatalogueSettings,
    OperatorSettings,
    Profile,
    Shares,
    ShopsSettings,
    SuppliersSettings,
)
from sim.suppliers.settings import Behaviour, Delay
from tests.integration.pipeline import fulfilment_line

pytestmark = pytest.mark.integration


def short_sale(orders: int = 200) -> SaleSettings:
    """A few hundred orders: the sale itself lasts ~13 s, its stories (deliveries, returns, exchanges)
    a minute or two more."""
    return SaleSettings(
        shops=ShopsSettings(count=3),
        catalogue=CatalogueSettings(products=5, skus_per_product=2),
        suppliers=SuppliersSettings(
            count=4,
            behaviour=Behaviour(
                accept_delay=Delay(min_s=30, max_s=600),
                reject_share=0.08,
                ship_delay=Delay(min_s=1800, max_s=7200),
                split_share=0.15,
                partial_share=0.05,
                rest_delay=Delay(min_s=1800, max_s=5400),
                answer_delay=Delay(min_s=10, max_s=120),
                receipt_delay=Delay(min_s=1200, max_s=3600),
            ),
        ),
        profile=Profile(total_orders=orders, warm_up_s=1800, spike_s=300, tail_s=1800),
        shares=Shares(
            unpaid_timeout=0.04,
            cancel_unpaid=0.03,
            cancel_before_ship=0.05,
            address_change=0.08,
            urge=0.05,
            refund_in_transit=0.05,
            refund_unsent=0.06,
            refund_after_delivery=0.05,
            return_after_delivery=0.06,
            exchange_after_delivery=0.06,
            withdraw_aftersale=0.2,
            multi_line=0.25,
        ),
        delays=BuyerDelays(
            pay=Delay(min_s=5, max_s=60),
            unpaid_timeout=Delay(min_s=1800, max_s=1800),
            cancel_unpaid=Delay(min_s=30, max_s=600),
            address_change=Delay(min_s=30, max_s=600),
            urge=Delay(min_s=600, max_s=3600),
            cancel_before_ship=Delay(min_s=30, max_s=300),
            aftersale_after_delivery=Delay(min_s=600, max_s=3600),
            send_return=Delay(min_s=600, max_s=3600),
            withdraw=Delay(min_s=60, max_s=300),
            confirm_receipt=Delay(min_s=600, max_s=3600),
        ),
        operator=OperatorSettings(
            decide_delay=Delay(min_s=300, max_s=1800), intercept_delay=Delay(min_s=60, max_s=600)
        ),
        time_scale=300,
        seed=7,
        poll_interval_s=0.5,
        settle_timeout_s=300,
        settle_stall_s=60,
        settle_limit_s=420,  # within the test's 600 s
    )


@pytest.mark.timeout(600)
async def test_a_short_sale_keeps_every_invariant(stack: LocalStack) -> None:
    settings = short_sale()
    async with fulfilment_line(stack) as line:
        urls = SaleUrls(
            wechat=str(line.wechat.base_url).rstrip("/"),
            carriers=str(line.carriers.base_url).rstrip("/"),
            ingest=line.ingest_url,
            dispatch=line.dispatch_url,
            aftersale=line.aftersale_url,
            kafka_bootstrap=stack.kafka_bootstrap,
        )
        registrar = CatalogRegistrar(line.catalog, OperatorTokens(line.db))
        report = await run_sale(settings, urls, registrar, shops=ShopRepository(line.db))
    print(report.text())
    assert report.stages["created"] == settings.profile.total_orders
    types = {key.split(" ")[0] for key in report.wechat_case_statuses}
    assert types == {"REFUND", "RETURN", "EXCHANGE"}, report.wechat_case_statuses
    assert report.ok, "\n" + report.text()
