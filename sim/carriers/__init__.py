"""Carrier stand-in: a Kuaidi100-style aggregator (e-waybill numbers, tracking subscriptions, signed
tracking callbacks on a time-compressible timeline) plus Kdniao-style pushes, with a control API under
/sim. Formats and signatures come from shared.carriers, the code the logistics service uses."""
