"""Policy optimisation for rewardlab: PPO / REINFORCE / RLOO math and best-of-N sampling."""
