"""Per-image FGCA building with a content cache, so an interrupted build resumes where it stopped.

For a batch of PASCAL-Context samples: class regions -> the interpreter's ``E`` per region
(``ImageInterpreter.interpret``, itself cached per region) -> one LLM text per image
(``synthesize``: batched, greedy first, seeded retries) -> phrase spans -> records. Each image's
outcome (records, or the reason it is quarantined) is stored under
``cache/fgca/<key>.json`` where ``key`` hashes the image and label-map content with every
setting that affects the outcome; images already there are not redone.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from iea.align.fgca import image_records
from iea.align.records import FgcaRecord
from iea.config import Settings
from iea.data.images import ImageDecodeError, load_rgb
from iea.data.pascal_classes import class_phrase
from iea.models.refs import tiny_identity
from iea.models.tiny import TINY_BUILDERS
from iea.store import ArtifactStore
from iea.vision.interpreter import ImageInterpreter


@dataclass
class ImageOutcome:
    """What one image gave: records (no split yet), or the reason it is quarantined."""

    image_id: str
    records: list[FgcaRecord] = field(default_factory=list)
    reason: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    cached: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "image_id": self.image_id,
            "records": [r.to_json() for r in self.records],
            "reason": self.reason,
            "detail": self.detail,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any], cached: bool = False) -> ImageOutcome:
        records = [FgcaRecord.from_json(r) for r in d["records"]]
        return cls(d["image_id"], records, d["reason"], d["detail"], cached)


class FgcaBuilder:
    """Builds FGCA outcomes image by image with the settings' interpreter VLM and text LLM."""

    def __init__(self, settings: Settings, store: ArtifactStore, *, llm=None, interpreter=None):
        self.settings = settings
        self.store = store
        self.interpreter = interpreter or ImageInterpreter(settings, store)
        self._llm = llm
        self._lock = threading.Lock()

    @property
    def llm(self):
        with self._lock:
            if self._llm is None:
                from iea.models.vlm import CausalLanguageModel

                rt = self.settings.runtime
                self._llm = CausalLanguageModel.from_ref(
                    self.settings.fgca.llm,
                    device=rt.device,
                    dtype=rt.dtype,
                    trust_remote_code=rt.trust_remote_code,
                    cache=rt.model_cache,
                    seed=rt.seed,
                )
            return self._llm

    def cache_key(self, sample) -> str:
        from iea.align import prompts
        from iea.keys import interpreter_fields, stage_code

        f, rt = self.settings.fgca, self.settings.runtime
        h = hashlib.sha256()
        h.update(hashlib.sha256(Path(sample.image_path).read_bytes()).digest())
        h.update(np.ascontiguousarray(sample.label_map, dtype=np.int32).tobytes())
        h.update(
            json.dumps(
                {
                    "llm": f.llm,
                    # a tiny model's weights change with its recipe, not its name
                    "tiny_version": (
                        tiny_identity(f.llm, seed=rt.seed) if f.llm in TINY_BUILDERS else None
                    ),
                    "seed": rt.seed,
                    "prompt": prompts.FGCA_PROMPT_VERSION,
                    "synthesis": f.model_dump(
                        mode="json",
                        include={
                            "min_region_area",
                            "subset",
                            "max_attempts",
                            "max_new_tokens",
                            "temperature",
                            "greedy_first",
                        },
                    ),
                    # what changes the descriptions E (not concurrency or logging settings)
                    "interpreter": interpreter_fields(self.settings),
                    "code": stage_code("fgca"),
                    # the descriptions E change with the interpreter's recipe too
                    "interpreter_version": (
                        tiny_identity(self.settings.interpreter.model, seed=rt.seed)
                        if self.settings.interpreter.model in TINY_BUILDERS
                        else None
                    ),
                },
                sort_keys=True,
            ).encode()
        )
        return f"cache/fgca/{h.hexdigest()}.json"

    def process(self, samples, class_names: dict[int, str]) -> list[ImageOutcome]:
        """Outcomes for ``samples`` (PascalSample), reusing cached ones; new ones are stored."""
        from iea.align.synthesize import synthesize
        from iea.data.pascal_context import class_regions

        f = self.settings.fgca
        outcomes: dict[str, ImageOutcome] = {}
        todo = []
        for sample in samples:
            key = self.cache_key(sample)
            if self.store.exists(key):
                outcomes[sample.image_id] = ImageOutcome.from_json(
                    json.loads(self.store.get(key)), cached=True
                )
                continue
            try:
                rgb = load_rgb(sample.image_path)
            except ImageDecodeError as e:
                outcomes[sample.image_id] = ImageOutcome(
                    sample.image_id, reason="unreadable image", detail={"error": str(e)}
                )
                continue
            regions = class_regions(sample.label_map, class_names, min_area=f.min_region_area)
            if not regions:
                outcomes[sample.image_id] = ImageOutcome(
                    sample.image_id, reason="no class region above min_region_area"
                )
                self.store.put(key, json.dumps(outcomes[sample.image_id].to_json()).encode())
                continue
            interps, _ = self.interpreter.interpret(rgb, sample.label_map, [r for r, _ in regions])
            described = [(r, name, interps[r.id].text) for r, name in regions]
            todo.append((sample, key, described))
        if todo:
            items = [
                (s.image_id, [class_phrase(n) for _, n, _ in d], [e for _, _, e in d])
                for s, _, d in todo
            ]
            results = synthesize(
                self.llm,
                items,
                seed=self.settings.runtime.seed,
                max_new_tokens=f.max_new_tokens,
                max_attempts=f.max_attempts,
                batch_size=f.batch_size,
                temperature=f.temperature,
                greedy_first=f.greedy_first,
            )
            for (sample, key, described), res in zip(todo, results, strict=True):
                if res.ok:
                    outcome = ImageOutcome(
                        sample.image_id,
                        image_records(sample.image_id, res.text, described, res.spans),
                    )
                    outcome.detail = {"attempts": res.attempts}
                else:
                    outcome = ImageOutcome(
                        sample.image_id,
                        reason="phrases missing from the generated text",
                        detail={
                            "missing": res.missing,
                            "attempts": res.attempts,
                            "texts": res.texts,
                        },
                    )
                self.store.put(key, json.dumps(outcome.to_json()).encode())
                outcomes[sample.image_id] = outcome
        return [outcomes[s.image_id] for s in samples]
