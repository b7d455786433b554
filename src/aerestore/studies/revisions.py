"""Files of a DVC repository as they are at an experiment or a git revision.

One reader for the study tools that compare DVC experiments: ``aerestore seeds``
(:func:`aerestore.studies.seed_runs.load_rev`: a run's ``metrics/evaluate_details.json`` and
``params.yaml``) and ``aerestore latent-sizes``
(:func:`aerestore.studies.latent_sizes.load_run`: an ``explore`` stage's metrics and
interpolation grid). Files are read with :func:`dvc.api.read` at the revision's commit: git
files and DVC-tracked outputs alike, without checking anything out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable


def read_revision(rev: str, paths: Iterable[str], repo: str | Path = ".", *, binary: Iterable[str] = (),
                  optional: Iterable[str] = (), what: str = "an experiment or git revision",
                  hint: str = "") -> tuple[str, dict[str, str | bytes | None]]:
    """``(sha, {path: content})``: each of ``paths`` read at ``rev`` (an experiment name such as
    ``moody-lahs``, or a git revision) of the DVC repository ``repo``; text, or bytes for the
    paths in ``binary``.

    ``ValueError`` when ``rev`` is not ``what`` of ``repo`` (or ``repo`` is no DVC repository
    with git); a path the revision does not have reads as ``None`` when it is in ``optional``,
    else raises ``FileNotFoundError`` naming the revision, its commit and the path, then
    ``hint`` (what to check)."""
    import dvc.api
    from dvc.exceptions import NotDvcRepoError, PathMissingError
    from dvc.repo import Repo
    from dvc.scm import RevError, SCMError, resolve_rev

    from scmrepo.exceptions import RevError as GitRevError

    try:
        with Repo(str(repo)) as r:
            try:  # a git revision (sha, branch, tag, HEAD) first: DVC's resolve_rev maps "HEAD" to
                # refs/exps/exec/EXEC_BASELINE whenever that ref exists, and an interrupted
                # workspace `dvc exp run` leaves it behind, pointing at an old commit
                sha = r.scm.resolve_rev(rev)
            except GitRevError:
                sha = resolve_rev(r.scm, rev)  # an experiment name
    except (NotDvcRepoError, SCMError, RevError, AssertionError):  # AssertionError: no git (NoSCM)
        raise ValueError(f"{rev}: not {what} of {repo}") from None
    binary, optional = set(binary), set(optional)
    found: dict[str, str | bytes | None] = {}
    for path in paths:
        try:
            found[path] = dvc.api.read(path, repo=str(repo), rev=sha, mode="rb" if path in binary else "r")
        except (FileNotFoundError, PathMissingError):
            if path not in optional:
                raise FileNotFoundError(f"{rev} ({sha[:7]}): no {path}{hint}") from None
            found[path] = None
    return sha, found
