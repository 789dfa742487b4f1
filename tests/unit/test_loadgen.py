import asyncio

from ops.loadgen import open_loop


async def test_open_loop_keeps_its_schedule_and_measures_from_the_scheduled_start() -> None:
    calls: list[int] = []

    async def slow_every_tenth(i: int) -> bool:
        calls.append(i)
        await asyncio.sleep(0.2 if i % 10 == 0 else 0.001)
        return i != 5

    result = await open_loop("unit", slow_every_tenth, rate=200, duration_s=0.5)
    assert result.sent == 100 and sorted(calls) == list(range(100))
    assert (result.ok, result.failed) == (99, 1)
    # Slow answers did not hold back the next requests: the run took about its duration.
    assert result.elapsed_s < 1.5  # closed-loop would need 10 x 0.2 s for the slow ones alone
    assert result.percentile_ms(50) < 50 and result.max_ms >= 200
    assert result.summary()["sent"] == 100
