"""The carrier world's facts, shared by the logistics service (receiving) and the stand-in in
sim/carriers (sending): one carrier-code table, and the Kuaidi100 and Kdniao wire formats with their
signatures, so both sides run the same format code and the unit vectors guard it."""
