"""Small campaigns of every render mode for the render-path tests, written beside copies of the demo media."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml


def write_campaign(folder: Path, media: Path, jobs: list[dict[str, object]], **top: object) -> Path:
    """A campaign file in `folder` whose assets are copies of the demo media."""
    assets = folder / "assets"
    if not assets.exists():
        shutil.copytree(media, assets)
    doc = {"id": "test-campaign", "output_prefix": "deliverables", **top, "jobs": jobs}
    path = folder / "campaign.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    return path


# small renders of every mode: 5 frames (2 latent frames) of 64x64 pixels, a few steps
SMALL = {"size": "64x64", "frames": 5, "steps": 3}
ALL_MODES: list[dict[str, object]] = [
    {
        "id": "woman-intro",
        "prompt": "A woman in a bright bathroom holds up a green shampoo bottle and smiles.",
        "subjects": [{"word": "woman", "image": "assets/woman.png"}],
        **SMALL,
    },
    {
        "id": "man-voiceover",
        "prompt": "A man talks to the camera in a sunny kitchen.",
        "subjects": [{"word": "man", "image": "assets/man.png"}],
        "audio": {"uri": "assets/voiceover.wav"},
        "foley": False,
        **SMALL,
    },
    {
        "id": "bottle-swap",
        "prompt": "A hand places a green bottle on a marble shelf.",
        "subjects": [{"word": "bottle", "image": "assets/bottle.png"}],
        "edit": {"video": "assets/shelf.mp4", "mask": "assets/shelf_mask.mp4"},
        **SMALL,
    },
    {
        "id": "meadow-mood",
        "prompt": "Morning light over a meadow of wild flowers.",
        "negative_prompt": "",
        **SMALL,
    },
]
