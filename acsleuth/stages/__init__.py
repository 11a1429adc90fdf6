"""The ACsleuth stages: detection (I); kin matching, style transfer and subtyping follow."""
