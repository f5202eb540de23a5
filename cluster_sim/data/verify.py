"""Restore verification: a checker, not a label.

A backup's restored image (the full plus the increments of its chain) is compared, block by
block, with the truth recorded at the VM's capture point:

- `app_consistent`: the image carries the guest's VSS metadata (its writers froze at t_meta)
  and equals the disk right after the guest flush at that freeze;
- `crash_consistent`: no guest VSS metadata, and the image equals the durable disk state at one
  recorded instant (the capture point);
- `lost_writes`: some block is older than the durable state at the capture point: a write that
  was acknowledged and on disk before the capture is missing;
- `torn`: otherwise: blocks from different instants (e.g. newer than the guest snapshot that the
  VSS metadata describes, or a mix produced by an overrun commit).

An image with VSS metadata that matches some durable state but not the guest's freeze is torn:
applications would run their restore recovery for t_meta against data from another instant.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

VERDICTS = ("app_consistent", "crash_consistent", "torn", "lost_writes")

# the verdict each claimed outcome should verify as
EXPECTED = {
    "app_consistent": "app_consistent",
    "crash_consistent": "crash_consistent",
    "saved_state": "app_consistent",  # memory and disk saved together: consistent
    "offline": "app_consistent",  # a stopped VM's disk does not change
}


@dataclass
class Capture:
    """What a backup captured for one VM, and the truth at its capture point."""

    image: np.ndarray  # what the copy read (block versions)
    claim_t: float  # the capture point
    meta_t: float | None  # instant the guest VSS writers froze (None: no guest VSS metadata)
    truth_app: np.ndarray | None = None  # disk right after the guest flush at the freeze
    truth_durable: list[np.ndarray] = field(default_factory=list)  # durable states at the capture point
    changed: np.ndarray | None = None  # incremental: block indexes copied (None: full)


def restore(previous: np.ndarray | None, cap: Capture) -> np.ndarray:
    """The restored disk: a full image, or the previous restore with the changed blocks applied."""
    if cap.changed is None or previous is None:
        return cap.image.copy()
    out = previous.copy()
    out[cap.changed] = cap.image[cap.changed]
    return out


def verify(restored: np.ndarray, cap: Capture) -> str:
    if cap.meta_t is not None and cap.truth_app is not None:
        if np.array_equal(restored, cap.truth_app):
            return "app_consistent"
        reference = cap.truth_app
    else:
        for truth in cap.truth_durable:
            if np.array_equal(restored, truth):
                return "crash_consistent"
        reference = cap.truth_durable[0] if cap.truth_durable else cap.image
    if np.any(restored < reference):
        return "lost_writes"
    return "torn"
