import asyncio


async def fetch():
    await asyncio.sleep(0)
    return "data"


async def handler():
    loop = asyncio.get_running_loop()
    future = asyncio.run_coroutine_threadsafe(fetch(), loop)
    return future.result()  # blocks the only thread that could run fetch()


try:
    asyncio.run(handler())
except Exception as exc:
    print(type(exc).__name__)
