"""One module per codec family, each registering its :class:`~lossbound.codecs.specs.CodecSpec`
in :data:`~lossbound.codecs.specs.CODECS` (found on first look-up). A new codec is a module
here plus ``conf/codec/<name>.yaml``."""
