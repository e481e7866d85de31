"""rewardlab's embedded world of symbol tasks (docstring to be completed)."""
