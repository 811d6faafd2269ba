"""How each trainable's inputs are checked before a run (`check`: data files, models, encoders;
a note on how the windows are split) and shrunk for `orchestrator preflight` (`preflight`), one
module per trainable, found through the registry (`trainables.inputs_of`). Apart from the
classifier's encoder check, torch-free."""
