"""Learning muscle policies: environment, reward, agents, training, checkpoints."""
