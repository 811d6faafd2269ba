"""Losses and regularisers the recipes combine: SIGReg, uncertainty weighting, the four span
tasks, the contrastive ranking and variance-covariance terms. (The masked MSE lives with the
masks, in `trainables.data.masking`.)"""
