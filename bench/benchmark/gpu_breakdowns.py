"""Where a GPU suite measurement's time goes, as lines of text: a step row's kernel profile, the training
step on a fixed batch against a whole epoch, and the race's epochs split into data, steps and evaluation.
A missed target lists them; the report's sections show them too."""

from __future__ import annotations


def profile_lines(row: dict) -> list[str]:
    """The row's profile, named by its row, so that a diagnosis is read against the row it came from."""
    profile = row.get("profile")
    if not profile:
        return []
    size = f" {row['image_size']} px" if "image_size" in row else ""
    which = (
        f"{row.get('label', row.get('model', 'the row'))}{size} {row['precision']} "
        f"{'compiled' if row['compile'] else 'eager'} ({pct(row['mfu_datasheet_bf16'])} MFU)"
    )
    if "error" in profile:
        return [f"{which}: no profile: {profile['error']}"]
    kinds = ", ".join(f"{kind} {ms:.2f}" for kind, ms in profile["ms_per_step"].items() if ms >= 0.005)
    return [f"{which}: {profile['unit']}: {kinds}{_busy(profile)}"]


def _busy(profile: dict) -> str:
    """The share of the step the GPU is busy, never over 100 %: kernel time summed past the step's
    wall time means kernels overlapped (or the timed step ran short), so the GPU was never idle."""
    share = profile.get("busy_share")
    if share is None:
        return ""
    if share > 1:
        return (
            f"; the GPU is busy all of the {profile['step_ms']:.2f} ms step (kernel times sum to "
            f"{share:.0%} of it: kernels overlap)"
        )
    return f"; the GPU is busy {share:.0%} of the {profile['step_ms']:.2f} ms step"


def step_lines(measured: dict) -> list[str]:
    return [_step_line(r) for r in measured["rows"]]


def _step_line(row: dict) -> str:
    if "skipped" in row:
        return f"{row['step']}: not measured ({row['skipped']})"
    fixed = f"fixed batch {row['fixed_images_per_s']:,.0f} img/s ({row['fixed_step_ms']:.2f} ms a step)"
    whole = f"an epoch end to end {row['end_to_end_images_per_s']:,.0f} img/s ({row['epoch_s']:.2f} s)"
    return f"{row['step']}: {fixed}; {whole}, {row['end_to_end_share']:.0%} of the fastest fixed-batch step"


def race_lines(race: dict) -> list[str]:
    lines = []
    for loop in race["loops"]:
        b = loop["breakdown"]
        lines.append(
            f"{loop['loop']}: setup {b['setup_s']:.1f} s; an epoch {b['epoch_s']:.2f} s, of which data alone "
            f"{b['data_alone_epoch_s']:.2f} s and the rest (steps, syncs) {b['step_epoch_s']:.2f} s; "
            f"evaluation {b['eval_epoch_s']:.2f} s an epoch (not in the training seconds)"
        )
    return lines


def pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f} %"
