import asyncio

from ops.loadgen import open_loop


async def test_open_loop_keeps_its_schedule_and_measures_from_the_scheduled_start() -> None:
    calls: list[int] = []
    every_request_started = asyncio.Event()

    async def every_tenth_waits_for_the_rest(i: int) -> bool:
        calls.append(i)
        if len(calls) == 100:
            every_request_started.set()
        if i % 10 == 0:
            # A closed loop would never send request 1 while request 0 waits here: the run would hang.
            await every_request_started.wait()
        return i != 5

    async with asyncio.timeout(30):
        result = await open_loop("unit", every_tenth_waits_for_the_rest, rate=200, duration_s=0.5)
    assert result.sent == 100 and sorted(calls) == list(range(100))
    assert (result.ok, result.failed) == (99, 1)
    # Request 0 was scheduled at 0 s and answered only after request 99 (scheduled at 0.495 s) started.
    assert result.max_ms >= 450
    assert result.summary()["sent"] == 100
