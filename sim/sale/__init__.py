"""The live-stream sale simulator: shops, a catalogue, suppliers with routes and a sale profile
(warm-up, the 10× "3-2-1, 上链接" spike, a tail), buyers driving the WeChat stand-in, supplier bots,
the shop's desk, and a report with invariants checked against the stand-ins' records."""

from sim.sale.collect import collect_facts, collect_report
from sim.sale.driver import SaleDriver, SaleProgress
from sim.sale.report import Facts, Invariant, SaleReport, compute_report
from sim.sale.run import SaleUrls, run_sale
from sim.sale.settings import SaleSettings
from sim.sale.world import Registrar, RouteSpec, World, build_world, setup_world

__all__ = [
    "Facts",
    "Invariant",
    "Registrar",
    "RouteSpec",
    "SaleDriver",
    "SaleProgress",
    "SaleReport",
    "SaleSettings",
    "SaleUrls",
    "World",
    "build_world",
    "collect_facts",
    "collect_report",
    "compute_report",
    "run_sale",
    "setup_world",
]
