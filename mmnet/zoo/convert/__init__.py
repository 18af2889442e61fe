"""Converters of the authors' checkpoints into mmnet checkpoint folders, one module per family (`mmnet`: the
official MMNet ``.pth`` files, see docs/official-checkpoints.md)."""
