"""Evaluation of trained models: classification scores, span scores and the multi-task trial's
diagnostic files, retrieval with trec_eval semantics, and isotropy."""
