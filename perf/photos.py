"""The seed scenario's data: a deterministic ~20 MB JSON of 211,640 photos.

Mirrors Flutter's "parse JSON in the background" example: decode a large JSON
array into objects. The generator is seeded, so every run measures the same
bytes.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

COUNT = 211_640
_WORDS = (
    "accusamus beatae ad facilis cum similique qui sunt reprehenderit est "
    "necessitatibus voluptas officia porro iure quia iusto qui ipsa ut modi "
    "culpa odio fugiat nihil aut incidunt rerum dolorem eius temporibus"
).split()


@dataclass
class Photo:
    albumId: int
    id: int
    title: str
    url: str
    thumbnailUrl: str


def generate(count: int = COUNT, seed: int = 2026) -> str:
    rng = random.Random(seed)
    photos = []
    for i in range(1, count + 1):
        colour = f"{rng.randrange(0x1000000):06x}"
        photos.append(
            {
                "albumId": (i - 1) // 50 + 1,
                "id": i,
                "title": " ".join(rng.choices(_WORDS, k=rng.randint(3, 8))),
                "url": f"https://via.placeholder.com/600/{colour}",
                "thumbnailUrl": f"https://via.placeholder.com/150/{colour}",
            }
        )
    return json.dumps(photos)


def decode(text: str) -> list[Photo]:
    """The work: JSON text to a list of Photo objects."""
    return [Photo(**item) for item in json.loads(text)]
