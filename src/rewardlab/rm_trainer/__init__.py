"""The reward-model trainer behind `rewardlab.train_rm.train_reward_model`, one stage a module:
build (accelerator, data, model, optimiser) -> loop (training steps, evaluation, checkpoints) -> outputs (metrics, model,
log, plot). The settings stay in `rewardlab.train_rm.RewardTrainingConfig`; the objective is `rewardlab.objective`."""
