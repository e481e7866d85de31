"""Adapters for RL engines that consume rewardlab rewards (imported on demand; no engine is a dependency)."""
