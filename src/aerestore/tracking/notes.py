"""The descriptions MLflow's UI shows: the experiment's, and each stage's run's."""

from __future__ import annotations

from aerestore.tracking.dvcinfo import DvcStageIO

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"  # model training (not GenAI), see store.init_store
NOTE_TAG = "mlflow.note.content"  # the description of an experiment or a run in the UI
_MAX_NOTE_LEN = 5000  # a run tag's value (MLflow's limit for tags stored in SQL: 8000)

EXPERIMENT_NOTE = """\
Image-restoration autoencoders trained by the aerestore DVC pipeline
(download -> prepare -> blocks -> train@<arch> -> cluster@<arch> -> decoders@<arch> -> evaluate).

Each run is one execution of one DVC stage, named after it: its params are exactly those
dvc.yaml lists for the stage, its inputs are the stage's data with DVC's md5 as digest,
and its tags say which DVC experiment (`dvc.exp_name`), commit (`git.commit`) and pipeline
execution (`aerestore.pipeline_id`) it belongs to. `evaluate` registers each restorer as
`aerestore-<arch>`; the alias `champion` marks each architecture's best version by validation
PSNR (the test figures are tags that only report).
"""

#: What each stage does, for its run's description (``{arch}``: the stage's architecture).
STAGE_NOTES = {
    "download": "Downloads (or copies) the images and writes their manifest.",
    "prepare": "Resizes and augments the images, damages them (blur, noise, ...) and splits "
               "them into train / val / test with clean, degraded and mask arrays.",
    "blocks": "Cuts the prepared images into overlapping blocks.",
    "train": "Trains the `{arch}` autoencoder to restore degraded blocks (or crops, for a fully "
             "convolutional network) to the clean ones; logs the per-epoch curves and the network.",
    "cluster": "Encodes the training data with `{arch}`'s encoder and clusters the codes: one "
               "cluster per kind of damage, ideally.",
    "decoders": "Fine-tunes one decoder per cluster of `{arch}` (and a control decoder on all "
                "the data) from the shared decoder.",
    "evaluate": "Restores the test images with every architecture and with the classical "
                "restorers, compares them image by image, and registers each restorer as "
                "`aerestore-<arch>` (a new version, tagged with its test metrics).",
    "explore": "Interpolations, analogies and prior samples in `{arch}`'s latent space.",
}


def stage_note(stage: str, arch: str | None, io: DvcStageIO) -> str:
    """Markdown for the run's description: what the stage does, its inputs (with DVC's
    md5) and its outputs."""
    base = stage.split("@", 1)[0]
    what = STAGE_NOTES.get(base, "").format(arch=arch or stage.partition("@")[2] or "?")
    lines = [f"**DVC stage `{stage}`**" + (f": {what}" if what else "")]
    if io.inputs:
        lines += ["", "Inputs (DVC md5):"] + [f"- `{i.path}` `{i.md5}`" for i in io.inputs]
    if io.outputs:
        lines += ["", "Outputs: " + ", ".join(f"`{o}`" for o in io.outputs)]
    return "\n".join(lines)
