"""``AudioFolders``: label-free audio files (a pretraining corpus) behind the part of the dataset interface that
:func:`deam_mamba.features.prepare.build_cache` uses (``ids``, ``audio_path``, ``root``, ``kind``, ``label_kind``,
``scale``, ``problems``).

Song ids are stable: the first 48 bits of the sha1 of the file's resolved path, so adding or removing files
keeps every other file's id (and so its cached features).
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

from deam_mamba.core.errors import DatasetNotFoundError, UnknownSongError
from deam_mamba.core.scales import LabelKind, Scale
from deam_mamba.data.annotations import Problem


def path_id(path: str | os.PathLike) -> int:
    """Stable int id of an audio file: 48 bits of the sha1 of its resolved path."""
    return int(hashlib.sha1(str(Path(path).resolve()).encode("utf-8")).hexdigest()[:12], 16)


class AudioFolders:
    """Audio files without labels. ``files``: the files (e.g. from ``collect_audio_files``); ``root``: a folder
    recorded in the cache index (the common parent of the files when None)."""

    kind = "folder"
    label_kind = LabelKind.NONE
    scale: Scale | None = None

    def __init__(self, files: Sequence[str | os.PathLike], root: str | os.PathLike | None = None):
        paths = [Path(f) for f in files]
        if not paths:
            raise DatasetNotFoundError("no audio files given: pass folders or files holding audio "
                                       "(mp3, wav, flac, ogg, opus, aiff)")
        self._audio: dict[int, Path] = {}
        for p in paths:
            sid = path_id(p)
            other = self._audio.setdefault(sid, p)
            if other.resolve() != p.resolve():  # 48-bit collision: ~1e-6 for 20 000 files
                raise DatasetNotFoundError(f"{p} and {other} get the same song id; rename one of them")
        self.ids: list[int] = sorted(self._audio)
        self.root = Path(root) if root is not None else Path(os.path.commonpath([str(p.resolve()) for p in paths]))
        self.problems: list[Problem] = []

    def __len__(self) -> int:
        return len(self.ids)

    def audio_path(self, song_id: int) -> Path:
        try:
            return self._audio[int(song_id)]
        except KeyError:
            raise UnknownSongError(f"no audio file with id {song_id} among {len(self.ids)} files") from None
