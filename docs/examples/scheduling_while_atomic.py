import asyncio
import threading

cache_lock = threading.Lock()
cache = {}


async def refresh(key):
    with cache_lock:
        cache[key] = await fetch(key)  # suspends while holding a thread lock


async def fetch(key):
    await asyncio.sleep(0)
    return key.upper()


asyncio.run(refresh("a"))
