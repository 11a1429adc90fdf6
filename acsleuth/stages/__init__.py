"""The ACsleuth stages: detection (I), kin matching (II), style transfer (III); subtyping follows."""
