"""How each trainable's inputs are checked before a run (`check`: data files, models, encoders;
a note on how the windows are split) and shrunk for `orchestrator preflight` (`preflight`), one
module per trainable, named by its settings module (`INPUTS`) and found through the registry
(`trainables.resolve`). Apart from the classifier's encoder check and a model's state.pt check,
torch-free."""
